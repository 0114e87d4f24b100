"""CniManager against fake plugins: chaining, capabilities, DEL from the cache, errors, timeouts."""

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from cri.cni import CniManager, PodNetwork, PortMapping
from cri.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from tests.support import cni_plugins

POD_ID = "ab" * 32


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.conf = tmp / "net.d"
        self.bins = tmp / "bin"
        self.cache = tmp / "cache"
        self.log = tmp / "calls.jsonl"
        self.netns = tmp / "netns"
        self.conf.mkdir()
        self.netns.write_text("")  # the fakes never enter it
        cni_plugins.install(self.bins, "fakea", "fakeb", "fakec", "fakeipam")

    def plugin(self, type_: str, **fake: Any) -> dict[str, Any]:
        return {"type": type_, "fake": {"log": str(self.log), **fake}}

    def write(self, plugins: list[dict[str, Any]], name: str = "testnet", version: str = "1.0.0", **extra: Any) -> None:
        obj = {"cniVersion": version, "name": name, "plugins": plugins, **extra}
        (self.conf / "10-test.conflist").write_text(json.dumps(obj))

    def manager(self, timeout: float = 10.0) -> CniManager:
        return CniManager(str(self.conf), [str(self.tmp / "none"), str(self.bins)], str(self.cache), timeout)

    def pod(self, pod_id: str = POD_ID, **kw: Any) -> PodNetwork:
        return PodNetwork(id=pod_id, netns=str(self.netns), name="web", namespace="default", uid="uid-1", **kw)

    def calls(self) -> list[dict[str, Any]]:
        return cni_plugins.calls(self.log)

    def summary(self) -> list[tuple[str, str]]:
        return [(c["command"], c["plugin"]) for c in self.calls()]

    def reset(self) -> None:
        self.log.unlink(missing_ok=True)


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


async def test_add_chains_prev_result_and_sets_environment(env: Env) -> None:
    env.write([env.plugin("fakea", ip="10.22.0.9/24"), env.plugin("fakeb", addIp="fd00::9/64"), env.plugin("fakec")])
    m = env.manager()
    result = await m.setup(env.pod())
    assert result.ips == ["10.22.0.9", "fd00::9"]
    assert result.interfaces[1] == {"name": "eth0", "sandbox": str(env.netns)}

    calls = env.calls()
    assert env.summary() == [("ADD", "fakea"), ("ADD", "fakeb"), ("ADD", "fakec")]
    assert "prevResult" not in calls[0]["stdin"]
    first = calls[0]
    assert calls[1]["stdin"]["prevResult"]["ips"] == [
        {"address": "10.22.0.9/24", "gateway": "10.22.0.1", "interface": 1}
    ]
    assert [ip["address"] for ip in calls[2]["stdin"]["prevResult"]["ips"]] == ["10.22.0.9/24", "fd00::9/64"]
    for c in calls:
        assert c["stdin"]["name"] == "testnet" and c["stdin"]["cniVersion"] == "1.0.0"
        assert "runtimeConfig" not in c["stdin"]
        assert c["env"] == {
            "CNI_COMMAND": "ADD",
            "CNI_CONTAINERID": POD_ID,
            "CNI_NETNS": str(env.netns),
            "CNI_IFNAME": "eth0",
            "CNI_ARGS": (
                f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID={POD_ID};"
                "K8S_POD_UID=uid-1"
            ),
            "CNI_PATH": f"{env.tmp / 'none'}:{env.bins}",
            "CRID_CNI_CACHE": str(env.cache),  # what a restarted crid finds a killed one's plugins by
        }
    assert first["stdin"]["fake"]["ip"] == "10.22.0.9/24"  # the plugin's own keys pass through

    # cached before setup returned, with what DEL needs
    entry = json.loads((env.cache / f"{POD_ID}.json").read_text())
    assert entry["result"] == result.raw and entry["ifName"] == "eth0" and entry["config"]["name"] == "testnet"
    assert m.cached(POD_ID) == result


async def test_runtime_config_holds_only_declared_capabilities(env: Env) -> None:
    a = env.plugin("fakea")
    a["capabilities"] = {"portMappings": True, "bandwidth": True, "dns": False}
    b = env.plugin("fakeb")
    b["capabilities"] = {"dns": True, "ipRanges": True, "cgroupPath": True}
    c = env.plugin("fakec")
    c["runtimeConfig"] = {"own": 1}  # nothing declared: the plugin's own runtimeConfig is left alone
    env.write([a, b, c])
    m = env.manager()
    m.update_pod_cidrs(["10.22.0.0/16", "fd00::/64"])
    pod = env.pod(
        port_mappings=(
            PortMapping("TCP", 80, 8080),
            PortMapping("udp", 53, 5353, "127.0.0.1"),
            PortMapping("tcp", 9000, 0),  # no host port: not a mapping
        ),
        bandwidth={"ingressRate": 1000, "ingressBurst": 2000},
        dns={"servers": ["10.0.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]},
        cgroup_path="/kubepods/pod1",
    )
    await m.setup(pod)
    rc = [c["stdin"].get("runtimeConfig") for c in env.calls()]
    assert rc[0] == {
        "portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
        ],
        "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000},
    }
    assert rc[1] == {
        "dns": {"servers": ["10.0.0.10"], "searches": ["svc.local"], "options": ["ndots:5"]},
        "ipRanges": [[{"subnet": "10.22.0.0/16"}], [{"subnet": "fd00::/64"}]],
        "cgroupPath": "/kubepods/pod1",
    }
    assert rc[2] == {"own": 1}

    # DEL replays the same runtimeConfig from the cache
    env.reset()
    await m.teardown(POD_ID, str(env.netns))
    assert [c["stdin"].get("runtimeConfig") for c in env.calls()] == list(reversed(rc))


async def test_del_in_reverse_with_cached_result_and_idempotent(env: Env) -> None:
    env.write([env.plugin("fakea"), env.plugin("fakeb"), env.plugin("fakec")])
    m = env.manager()
    result = await m.setup(env.pod())
    env.reset()
    await m.teardown(POD_ID, None)
    assert env.summary() == [("DEL", "fakec"), ("DEL", "fakeb"), ("DEL", "fakea")]
    for c in env.calls():
        assert c["stdin"]["prevResult"] == result.raw
        assert c["env"]["CNI_NETNS"] == ""  # no netns: plugins still release what lives outside it
        assert c["env"]["CNI_IFNAME"] == "eth0" and c["env"]["CNI_CONTAINERID"] == POD_ID
    assert not (env.cache / f"{POD_ID}.json").exists()
    assert m.cached(POD_ID) is None
    env.reset()
    await m.teardown(POD_ID, None)  # nothing cached: nothing to do
    assert env.calls() == []


async def test_del_passes_netns_only_when_it_is_a_namespace(env: Env) -> None:
    env.write([env.plugin("fakea")])
    m = env.manager()
    await m.setup(env.pod())
    env.reset()
    await m.teardown(POD_ID, str(env.netns))  # a plain file, not a namespace
    assert env.calls()[0]["env"]["CNI_NETNS"] == ""


async def test_cache_survives_restart_and_config_change(env: Env) -> None:
    env.write([env.plugin("fakea", ip="10.22.3.4/24"), env.plugin("fakeb")], name="original", version="0.4.0")
    result = await env.manager().setup(env.pod(ifname="net0"))
    assert result.ips == ["10.22.3.4"]

    # a new daemon, and the admin replaced the network config meanwhile
    (env.conf / "10-test.conflist").unlink()
    env.write([env.plugin("fakec")], name="replacement")
    env.reset()
    m2 = env.manager()
    cached = m2.cached(POD_ID)
    assert cached is not None and cached.ips == ["10.22.3.4"] and cached.raw == result.raw
    assert await m2.cached_pods() == [POD_ID]
    await m2.teardown(POD_ID, None)
    assert env.summary() == [("DEL", "fakeb"), ("DEL", "fakea")]
    for c in env.calls():
        assert c["stdin"]["name"] == "original" and c["stdin"]["cniVersion"] == "0.4.0"
        assert c["env"]["CNI_IFNAME"] == "net0"
        assert c["stdin"]["prevResult"]["ips"][0]["version"] == "4"
    assert m2.cached(POD_ID) is None and await m2.cached_pods() == []


async def test_del_of_a_0_3_1_network_has_no_prev_result(env: Env) -> None:
    env.write([env.plugin("fakea")], version="0.3.1")
    m = env.manager()
    r = await m.setup(env.pod())
    assert r.raw["ips"][0]["version"] == "4" and r.ips == ["10.22.0.5"]
    env.reset()
    await m.teardown(POD_ID, None)
    assert "prevResult" not in env.calls()[0]["stdin"]  # cached results on DEL came with 0.4.0


async def test_0_2_0_network(env: Env) -> None:
    env.write([env.plugin("fakea", ip="10.22.7.7/24")], version="0.2.0")
    r = await env.manager().setup(env.pod())
    assert r.ips == ["10.22.7.7"] and r.interfaces == []


async def test_plugin_error_message_and_cleanup_del(env: Env) -> None:
    env.write(
        [
            env.plugin("fakea"),
            env.plugin(
                "fakeb", mode="error", on=["ADD"], code=11, msg="no IP addresses available", details="range full"
            ),
            env.plugin("fakec"),
        ]
    )
    m = env.manager()
    with pytest.raises(Unavailable) as e:
        await m.setup(env.pod())
    assert "fakeb" in str(e.value) and "no IP addresses available: range full" in str(e.value)
    # the whole chain is DELeted in reverse, even the plugin that never ran (the spec's advice)
    assert env.summary() == [("ADD", "fakea"), ("ADD", "fakeb"), ("DEL", "fakec"), ("DEL", "fakeb"), ("DEL", "fakea")]
    assert not (env.cache / f"{POD_ID}.json").exists() and m.cached(POD_ID) is None


async def test_config_rejected_by_plugin_is_failed_precondition(env: Env) -> None:
    env.write([env.plugin("fakea", mode="error", on=["ADD"], code=7, msg="invalid network config: bad subnet")])
    with pytest.raises(FailedPrecondition, match="bad subnet"):
        await env.manager().setup(env.pod())


async def test_garbage_output_shows_stderr(env: Env) -> None:
    env.write([env.plugin("fakea", mode="garbage", on=["ADD"])])
    with pytest.raises(Unavailable, match="something broke on stderr"):
        await env.manager().setup(env.pod())


async def test_failed_cleanup_keeps_the_entry_for_teardown(env: Env) -> None:
    broken = env.tmp / "broken"
    broken.write_text("")
    env.write([env.plugin("fakea", mode="error", msg="plugin is broken", **{"while": str(broken)})])
    m = env.manager()
    with pytest.raises(Unavailable, match="plugin is broken"):
        await m.setup(env.pod())
    assert env.summary() == [("ADD", "fakea"), ("DEL", "fakea")]
    assert await m.cached_pods() == [POD_ID] and m.cached(POD_ID) is None
    with pytest.raises(Unavailable, match="plugin is broken"):
        await m.teardown(POD_ID, None)
    assert await m.cached_pods() == [POD_ID]  # kept until a DEL succeeds
    broken.unlink()
    await m.teardown(POD_ID, None)
    assert await m.cached_pods() == []


async def all_gone(pids: list[int]) -> None:
    """The plugin processes end (within 5 s)."""
    for _ in range(50):
        if not any(cni_plugins.pid_alive(p) for p in pids):
            break
        await asyncio.sleep(0.1)
    assert not any(cni_plugins.pid_alive(p) for p in pids)


async def test_hanging_plugin_is_killed_with_its_children(env: Env) -> None:
    pidfile = env.tmp / "pids"
    env.write([env.plugin("fakea"), env.plugin("fakeb", mode="hang", on=["ADD"], pidfile=str(pidfile))])
    m = env.manager(timeout=1.0)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"fakeb \(ADD\) did not finish within 1s and was killed"):
        await m.setup(env.pod())
    assert time.monotonic() - started < 8
    pids = [int(p) for p in pidfile.read_text().split()]
    await all_gone(pids)
    assert env.summary()[-2:] == [("DEL", "fakeb"), ("DEL", "fakea")]
    assert await m.cached_pods() == []


async def test_cancelled_setup_kills_the_plugin_and_teardown_cleans_up(env: Env) -> None:
    pidfile = env.tmp / "pids"
    env.write([env.plugin("fakea"), env.plugin("fakeb", mode="hang", on=["ADD"], pidfile=str(pidfile))])
    m = env.manager()
    task = asyncio.create_task(m.setup(env.pod()))
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text():
            break
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pids = [int(p) for p in pidfile.read_text().split()]
    await all_gone(pids)
    # the half-done ADD is recorded: no result to report, but teardown knows what to DEL
    assert m.cached(POD_ID) is None and await m.cached_pods() == [POD_ID]
    env.reset()
    await m.teardown(POD_ID, None)
    assert env.summary() == [("DEL", "fakeb"), ("DEL", "fakea")]
    assert all("prevResult" not in c["stdin"] for c in env.calls())


async def test_setup_again_deletes_the_old_attachment_first(env: Env) -> None:
    env.write([env.plugin("fakea")])
    m = env.manager()
    await m.setup(env.pod())
    env.reset()
    await m.setup(env.pod())
    assert env.summary() == [("DEL", "fakea"), ("ADD", "fakea")]


async def test_check(env: Env) -> None:
    env.write([env.plugin("fakea"), env.plugin("fakeb")])
    m = env.manager()
    with pytest.raises(NotFound):
        await m.check(POD_ID, str(env.netns))
    r = await m.setup(env.pod())
    env.reset()
    await m.check(POD_ID, str(env.netns))
    assert env.summary() == [("CHECK", "fakea"), ("CHECK", "fakeb")]
    assert all(c["stdin"]["prevResult"] == r.raw and c["env"]["CNI_NETNS"] == str(env.netns) for c in env.calls())


async def test_check_failure_and_skipped_versions(env: Env) -> None:
    env.write([env.plugin("fakea", mode="error", on=["CHECK"], msg="eth0 is gone")])
    m = env.manager()
    await m.setup(env.pod())
    with pytest.raises(Unavailable, match="eth0 is gone"):
        await m.check(POD_ID, str(env.netns))
    await m.teardown(POD_ID, None)

    extras: list[tuple[dict[str, Any], str]] = [({"disableCheck": True}, "1.0.0"), ({}, "0.3.1")]
    for extra, version in extras:
        env.write([env.plugin("fakea", mode="error", on=["CHECK"])], version=version, **extra)
        await m.setup(env.pod())
        env.reset()
        await m.check(POD_ID, str(env.netns))
        assert env.calls() == []
        await m.teardown(POD_ID, None)


async def test_not_ready_network_fails_setup(env: Env) -> None:
    m = env.manager()
    with pytest.raises(FailedPrecondition, match="no network config found"):
        await m.setup(env.pod())
    env.write([env.plugin("fakea"), {"type": "nosuchplugin"}])
    with pytest.raises(FailedPrecondition, match="nosuchplugin"):
        await m.setup(env.pod())
    assert await m.cached_pods() == []


async def test_invalid_pod_arguments(env: Env) -> None:
    env.write([env.plugin("fakea")])
    m = env.manager()
    with pytest.raises(InvalidArgument):
        await m.setup(env.pod(pod_id="../x"))
    with pytest.raises(InvalidArgument):
        await m.setup(PodNetwork(id=POD_ID, netns=str(env.netns), name="a;b", namespace="n", uid="u"))
    with pytest.raises(InvalidArgument):
        await m.setup(env.pod(ifname="a-very-long-interface-name"))
    with pytest.raises(InvalidArgument):
        await m.setup(env.pod(port_mappings=(PortMapping("icmp", 1, 1),)))
    with pytest.raises(InvalidArgument):
        await m.teardown("../x", None)
    assert env.calls() == []


async def test_concurrent_pods(env: Env) -> None:
    env.write([env.plugin("fakea"), env.plugin("fakeb")])
    m = env.manager()
    ids = [f"{i:064x}" for i in range(12)]
    results = await asyncio.gather(*(m.setup(env.pod(pod_id=i)) for i in ids))
    assert all(r.ips == ["10.22.0.5"] for r in results)
    assert await m.cached_pods() == sorted(ids)
    await asyncio.gather(*(m.teardown(i, None) for i in ids))
    assert await m.cached_pods() == []
    assert sorted(c["env"]["CNI_CONTAINERID"] for c in env.calls() if c["command"] == "DEL") == sorted(ids * 2)


async def test_corrupt_cache_entry(env: Env) -> None:
    env.write([env.plugin("fakea")])
    m = env.manager()
    env.cache.mkdir()
    (env.cache / f"{POD_ID}.json").write_text("{garbage")
    assert m.cached(POD_ID) is None
    with pytest.raises(FailedPrecondition, match="corrupt"):
        await m.teardown(POD_ID, None)


async def test_teardown_uses_the_entry_this_daemon_wrote(env: Env) -> None:
    """The DEL of a pod this daemon set up does not read its cache file back; a new daemon does."""
    env.write([env.plugin("fakea")])
    m = env.manager()
    await m.setup(env.pod())
    (env.cache / f"{POD_ID}.json").write_text("{garbage")  # not read again by m
    await m.teardown(POD_ID, None)
    assert not (env.cache / f"{POD_ID}.json").exists()
    await m.setup(env.pod())
    (env.cache / f"{POD_ID}.json").write_text("{garbage")
    with pytest.raises(FailedPrecondition, match="corrupt"):
        await env.manager().teardown(POD_ID, None)  # a restarted daemon knows only the file


async def test_verify_plugins(env: Env) -> None:
    env.write([env.plugin("fakea"), {"type": "fakeb", "ipam": {"type": "fakeipam"}}])
    await env.manager().verify_plugins()
    env.write([env.plugin("fakea")], version="0.1.0")
    with pytest.raises(FailedPrecondition, match=r"fakea .* does not support cniVersion 0.1.0"):
        await env.manager().verify_plugins()


async def test_clear_partial_writes_keeps_the_entries(env: Env) -> None:
    env.write([env.plugin("fakea")])
    m = env.manager()
    await m.setup(env.pod())
    half = env.cache / f".{POD_ID}.x1y2z3.tmp"  # what a daemon killed between write and rename leaves
    half.write_text('{"kind": "cridC')
    await m.clear_partial_writes()
    assert sorted(p.name for p in env.cache.iterdir()) == [f"{POD_ID}.json"]
    assert await m.cached_pods() == [POD_ID]
