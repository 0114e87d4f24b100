"""Property tests of CNI configs and results (cri/cni/config.py, cri/cni/result.py).

Results are generated in crid's normal (1.0.0) shape and written in each
spec version by the writers below, which follow the CNI spec, not crid.
"""

import contextlib
import ipaddress
import json
import re
import string
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from cri.cni import config, result
from cri.cni.config import ConfigError
from cri.cni.result import ResultError

VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")  # libcni's network names (Go's '$' is the very end)

json_scalar = st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=8)
json_any: st.SearchStrategy[Any] = st.recursive(
    json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)
ALNUM = string.ascii_letters + string.digits
word = st.text(string.ascii_lowercase + string.digits + "-_", min_size=1, max_size=10)

# --- results


@st.composite
def interface_addr(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        return f"{draw(st.ip_addresses(v=4))}/{draw(st.integers(0, 32))}"
    return f"{draw(st.ip_addresses(v=6))}/{draw(st.integers(0, 128))}"


@st.composite
def route(draw: st.DrawFn) -> dict[str, Any]:
    net = ipaddress.ip_interface(draw(interface_addr())).network
    r: dict[str, Any] = {"dst": str(net)}
    if draw(st.booleans()):
        r["gw"] = str(draw(st.ip_addresses(v=net.version)))
    return r


@st.composite
def results(draw: st.DrawFn) -> dict[str, Any]:
    """A result in the normalised (1.0.0) shape."""
    interfaces = draw(
        st.lists(
            st.fixed_dictionaries(
                {"name": word}, optional={"mac": word, "sandbox": st.sampled_from(["", "/var/run/netns/x"])}
            ),
            max_size=3,
        )
    )
    ips: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 4))):
        ip: dict[str, Any] = {"address": draw(interface_addr())}
        if draw(st.booleans()):
            ip["gateway"] = str(draw(st.ip_addresses(v=ipaddress.ip_interface(ip["address"]).version)))
        if draw(st.booleans()) and interfaces:
            ip["interface"] = draw(st.integers(0, len(interfaces) - 1))
        ips.append(ip)
    routes = draw(st.lists(route(), max_size=3))
    out: dict[str, Any] = {"cniVersion": "1.0.0", "interfaces": interfaces, "ips": ips, "routes": routes}
    with_dns: bool = draw(st.booleans())
    if with_dns:
        out["dns"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "nameservers": st.lists(st.ip_addresses().map(str), max_size=2),
                    "domain": word,
                    "search": st.lists(word, max_size=2),
                },
            )
        )
    return out


def _v(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def write(current: dict[str, Any], version: str) -> dict[str, Any]:
    """``current`` as a plugin of ``version`` prints it (the spec's shape for that version)."""
    out: dict[str, Any] = json.loads(json.dumps({**current, "cniVersion": version}))
    if _v(version) < (1, 0, 0):  # 0.3.x and 0.4.0 label each address with its family
        for ip in out["ips"]:
            ip["version"] = str(ipaddress.ip_interface(ip["address"]).version)
    return out


def addresses(res: dict[str, Any]) -> list[str]:
    return [ip["address"] for ip in res["ips"]]


@given(results(), st.sampled_from(VERSIONS), st.sampled_from(VERSIONS))
def test_results_normalise_and_convert_back_in_every_version(current: dict[str, Any], got_in: str, conf: str) -> None:
    printed = write(current, got_in)
    norm = result.normalize(printed, conf)  # the result's own version wins over the config's
    assert norm == current
    for version in VERSIONS:
        back = result.convert(norm, version)
        assert back == write(current, version)  # the spec's shape, IPs, routes, DNS and all
        assert result.normalize(back, version) == current
        assert result.normalize(json.loads(json.dumps(back)), conf) == current


@given(results(), st.sampled_from(VERSIONS))
def test_result_without_its_own_version_takes_the_configs(current: dict[str, Any], version: str) -> None:
    printed = write(current, version)
    del printed["cniVersion"]
    assert result.normalize(printed, version) == current


@given(results(), st.sampled_from(["0.1.0", "0.2.0"]))
def test_legacy_results_keep_one_address_per_family(current: dict[str, Any], version: str) -> None:
    legacy = result.convert(current, version)
    norm = result.normalize(json.loads(json.dumps(legacy)), version)
    first: dict[int, dict[str, Any]] = {}
    for ip in current["ips"]:
        first.setdefault(ipaddress.ip_interface(ip["address"]).version, ip)
    assert sorted(addresses(norm)) == sorted(ip["address"] for ip in first.values())
    assert norm.get("dns") == current.get("dns")
    # the routes of each family go with its address, IPv4's first
    fams = [f for f in (4, 6) if f in first]
    assert norm["routes"] == [r for f in fams for r in current["routes"] if ipaddress.ip_network(r["dst"]).version == f]


@given(results(), word)
def test_pod_ips_come_from_the_result(current: dict[str, Any], ifname: str) -> None:
    got = result.pod_ips(current, ifname)
    all_ips = {str(ipaddress.ip_interface(a).ip) for a in addresses(current)}
    assert set(got) <= all_ips and len(got) == len(set(got))
    versions = [ipaddress.ip_address(a).version for a in got]
    assert versions == sorted(versions)  # IPv4 first
    assert bool(got) == bool(all_ips)


def _damage(draw: st.DrawFn, obj: Any, depth: int = 0) -> Any:
    """``obj`` with one value somewhere replaced by any JSON value."""
    if isinstance(obj, dict) and obj and depth < 4 and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(obj)))
        return {**obj, key: _damage(draw, obj[key], depth + 1)}
    if isinstance(obj, list) and obj and depth < 4 and draw(st.booleans()):
        i = draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], _damage(draw, obj[i], depth + 1), *obj[i + 1 :]]
    return draw(json_any)


@st.composite
def damaged_results(draw: st.DrawFn) -> tuple[Any, str]:
    version = draw(st.sampled_from(VERSIONS))
    return _damage(draw, write(draw(results()), version)), version


@given(damaged_results() | st.tuples(json_any, st.sampled_from(config.SUPPORTED_VERSIONS)))
@example(({"cniVersion": "9.9.9"}, "1.0.0"))
@example(({"ips": [{"address": "10.0.0.1"}]}, "1.0.0"))
@example(({"interfaces": [{}], "ips": [{"address": "10.0.0.1/8", "interface": 1}]}, "1.0.0"))
def test_damaged_results_normalise_or_raise_result_error(case: tuple[Any, str]) -> None:
    obj, version = case
    try:
        norm = result.normalize(obj, version)
    except ResultError as exc:
        assert str(exc)
        return
    for v in VERSIONS:  # what normalize accepts, convert and pod_ips take
        assert result.normalize(json.loads(json.dumps(result.convert(norm, v))), v) == norm
    result.normalize(result.convert(norm, "0.2.0"), "0.2.0")
    result.pod_ips(norm, "eth0")


@given(damaged_results())
@example(
    ({"cniVersion": "1.0.0", "interfaces": [{}, {}], "ips": [{"address": "10.0.0.1/8", "interface": True}]}, "1.0.0")
)
def test_interface_indexes_are_integers(case: tuple[Any, str]) -> None:
    try:
        norm = result.normalize(*case)
    except ResultError:
        return
    assert all(type(ip.get("interface", 0)) is int for ip in norm["ips"])


# --- configs

capabilities = st.dictionaries(st.sampled_from(["portMappings", "bandwidth", "ipRanges", "dns", "mac"]), st.booleans())


@st.composite
def plugins(draw: st.DrawFn) -> dict[str, Any]:
    p: dict[str, Any] = {"type": draw(word)}
    if draw(st.booleans()):
        p["ipam"] = {"type": draw(word)}
    if draw(st.booleans()):
        p["capabilities"] = draw(capabilities)
    p.update(draw(st.dictionaries(st.sampled_from(["bridge", "isGateway", "mtu", "x"]), json_scalar, max_size=2)))
    return p


@st.composite
def conflists(draw: st.DrawFn) -> dict[str, Any]:
    c: dict[str, Any] = {
        "cniVersion": draw(st.sampled_from(config.SUPPORTED_VERSIONS)),
        "name": draw(st.text(ALNUM, min_size=1, max_size=1)) + draw(st.text(ALNUM + "_.-", max_size=15)),
        "plugins": draw(st.lists(plugins(), min_size=1, max_size=4)),
    }
    if draw(st.booleans()):
        c["disableCheck"] = draw(st.booleans() | st.sampled_from(["true", "false", "TRUE", "False"]))
    return c


@given(conflists())
def test_conflists_keep_name_version_and_plugins(obj: dict[str, Any]) -> None:
    net = config.parse_bytes(json.dumps(obj).encode(), "/etc/cni/net.d/10-x.conflist")
    assert (net.name, net.cni_version, net.raw) == (obj["name"], obj["cniVersion"], obj)
    assert [p.type for p in net.plugins] == [p["type"] for p in obj["plugins"]]
    assert [p.capabilities for p in net.plugins] == [
        frozenset(k for k, v in p.get("capabilities", {}).items() if v) for p in obj["plugins"]
    ]
    assert net.disable_check == (str(obj.get("disableCheck", False)).lower() == "true")
    wanted = [t for p in obj["plugins"] for t in (p["type"], p.get("ipam", {}).get("type"))]
    assert net.binaries() == list(dict.fromkeys(t for t in wanted if t))


@given(conflists(), st.sampled_from([".conf", ".json"]))
def test_single_plugin_confs_are_wrapped_in_a_list(obj: dict[str, Any], ext: str) -> None:
    plugin = {"cniVersion": obj["cniVersion"], "name": obj["name"], **obj["plugins"][0]}
    net = config.parse_bytes(json.dumps(plugin).encode(), "10-x" + ext)
    assert (net.name, net.cni_version, [p.conf for p in net.plugins]) == (obj["name"], obj["cniVersion"], [plugin])


@st.composite
def damaged_confs(draw: st.DrawFn) -> tuple[bytes, str]:
    obj = _damage(draw, draw(conflists()))
    return json.dumps(obj).encode(), draw(st.sampled_from(["a.conflist", "a.conf", "a.json"]))


@given(damaged_confs() | st.tuples(st.binary(max_size=40), st.just("a.conflist")))
@example((b'{"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../bin/sh"}]}', "a.conflist"))
@example((b"\xff\xfe", "a.conf"))
def test_damaged_configs_parse_or_raise_config_error(case: tuple[bytes, str]) -> None:
    try:
        net = config.parse_bytes(*case)
    except ConfigError as exc:
        assert str(exc)
        return
    assert net.plugins and all(p.type and "/" not in p.type for p in net.plugins)


@given(st.integers(1, 200_000), st.sampled_from(["[", '{"a":']))
@example(100_000, "[")
def test_deeply_nested_configs_raise_config_error(depth: int, opener: str) -> None:
    with contextlib.suppress(ConfigError):
        config.parse_bytes((opener * depth).encode(), "a.conflist")


@given(conflists(), st.text(max_size=3))
@example({"cniVersion": "1.0.0", "name": "net", "plugins": [{"type": "bridge"}]}, "\n")
def test_accepted_network_names_are_valid(obj: dict[str, Any], suffix: str) -> None:
    obj["name"] += suffix
    try:
        net = config.parse_bytes(json.dumps(obj).encode(), "a.conflist")
    except ConfigError:
        return
    assert NAME.match(net.name), net.name
