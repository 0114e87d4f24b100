"""CNI results of spec versions 1.0.0, 0.4.0, 0.3.1 and 0.2.0."""

from typing import Any

import pytest

from cri.cni.result import ResultError, convert, normalize, pod_ips

IFACES = [
    {"name": "cni0", "mac": "00:11:22:33:44:55"},
    {"name": "veth1", "mac": "55:44:33:22:11:11"},
    {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/run/netns/blue"},
]


def result_v1() -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": IFACES,
        "ips": [
            {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
            {"address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2},
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dns": {"nameservers": ["10.1.0.1"]},
    }


def result_legacy(version: str) -> dict[str, Any]:
    r = result_v1()
    r["cniVersion"] = version
    r["ips"] = [{"version": "6", **r["ips"][0]}, {"version": "4", **r["ips"][1]}]
    return r


def test_normalize_1_0_0() -> None:
    cur = normalize(result_v1(), "1.0.0")
    assert cur["interfaces"] == IFACES
    assert [ip["address"] for ip in cur["ips"]] == ["fd00::5/64", "10.1.0.5/16"]
    assert pod_ips(cur, "eth0") == ["10.1.0.5", "fd00::5"]  # IPv4 first


@pytest.mark.parametrize("version", ["0.4.0", "0.3.1", "0.3.0"])
def test_normalize_0_3_and_0_4(version: str) -> None:
    cur = normalize(result_legacy(version), version)
    assert cur["cniVersion"] == "1.0.0"
    assert all("version" not in ip for ip in cur["ips"])
    assert pod_ips(cur, "eth0") == ["10.1.0.5", "fd00::5"]
    back = convert(cur, version)
    assert back["cniVersion"] == version
    assert [ip["version"] for ip in back["ips"]] == ["6", "4"]


def test_normalize_0_2_0() -> None:
    old = {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "10.1.0.7/24", "gateway": "10.1.0.1", "routes": [{"dst": "0.0.0.0/0"}]},
        "ip6": {"ip": "fd00::7/64"},
        "dns": {"nameservers": ["1.1.1.1"]},
    }
    cur = normalize(old, "0.2.0")
    assert cur["interfaces"] == []
    assert cur["ips"] == [{"address": "10.1.0.7/24", "gateway": "10.1.0.1"}, {"address": "fd00::7/64"}]
    assert cur["routes"] == [{"dst": "0.0.0.0/0"}]
    assert pod_ips(cur, "eth0") == ["10.1.0.7", "fd00::7"]
    back = convert(cur, "0.2.0")
    assert back["ip4"] == old["ip4"] and back["ip6"] == {"ip": "fd00::7/64"} and back["dns"] == old["dns"]


def test_convert_1_0_0_to_0_4_0_and_back() -> None:
    cur = normalize(result_v1(), "1.0.0")
    as040 = convert(cur, "0.4.0")
    assert as040["ips"][1] == {"version": "4", "address": "10.1.0.5/16", "gateway": "10.1.0.1", "interface": 2}
    assert normalize(as040, "0.4.0") == cur


def test_result_version_wins_over_config_version() -> None:
    # a plugin that answers 0.4.0 under a 1.0.0 config: libcni reads the result's own version
    cur = normalize(result_legacy("0.4.0"), "1.0.0")
    assert all("version" not in ip for ip in cur["ips"])


def test_missing_version_uses_config_version() -> None:
    r = result_v1()
    del r["cniVersion"]
    assert normalize(r, "1.0.0")["ips"][0]["address"] == "fd00::5/64"


def test_pod_ips_prefers_the_sandbox_interface() -> None:
    r = result_v1()
    r["interfaces"] = [*IFACES, {"name": "net1", "sandbox": "/run/netns/blue"}]
    r["ips"] = [
        {"address": "192.168.0.1/24", "interface": 0},  # on the bridge: not the pod's
        {"address": "172.16.0.9/24", "interface": 3},  # another sandbox interface
        {"address": "10.1.0.5/16", "interface": 2},
    ]
    assert pod_ips(normalize(r, "1.0.0"), "eth0") == ["10.1.0.5"]
    assert pod_ips(normalize(r, "1.0.0"), "eth9") == ["172.16.0.9", "10.1.0.5"]


def test_pod_ips_without_interface_indexes_takes_all() -> None:
    r = {"cniVersion": "1.0.0", "ips": [{"address": "fd00::2/64"}, {"address": "10.0.0.2/8"}]}
    assert pod_ips(normalize(r, "1.0.0"), "eth0") == ["10.0.0.2", "fd00::2"]


@pytest.mark.parametrize(
    ("obj", "needle"),
    [
        ("x", "not a JSON object"),
        ({"cniVersion": "7.0.0"}, "unsupported result cniVersion"),
        ({"cniVersion": "1.0.0", "ips": {}}, "'ips' is not a list"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1"}]}, "not an address with prefix length"),
        ({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.1/8", "interface": 3}]}, "out of range"),
        ({"cniVersion": "0.2.0", "ip4": {"ip": "bad"}}, "ip4"),
        ({"cniVersion": "1.0.0", "dns": []}, "'dns' is not an object"),
    ],
)
def test_invalid_results(obj: Any, needle: str) -> None:
    with pytest.raises(ResultError) as e:
        normalize(obj, "1.0.0")
    assert needle in str(e.value)
