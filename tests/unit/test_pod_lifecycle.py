"""The pod sandbox state machine on a fake OCI runtime, host and CNI (no root):
a retried RunPodSandbox joins the attempt in flight, a failure at any step
undoes every step, stop and remove leave nothing, and startup recovery
finishes each half-done record a killed daemon can leave."""

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import AlreadyExists, FailedPrecondition, NotFound
from cri.runtime import userns
from cri.runtime.events import Kind
from cri.runtime.handlers import HandlerFeatures
from cri.runtime.sandbox_store import Sandbox, SandboxStore, State
from tests.unit.runtime_fakes import Injected, Node, full_pod_config, pod_config

TIMEOUT = 10.0


def run(tmp_path: Path, body: Callable[[Node], Awaitable[None]]) -> Node:
    async def main() -> Node:
        node = Node(tmp_path)
        await node.start()
        try:
            await asyncio.wait_for(body(node), TIMEOUT)
        finally:
            await node.close()
        return node

    return asyncio.run(main())


def recorded(node: Node) -> list[str]:
    """The pod rows in the database (not the memory mirror)."""
    return [row["id"] for row in node.store.db.execute("SELECT id FROM sandboxes")]


def test_run_stop_remove_leaves_nothing(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        with node.pods.events.subscribe() as sub:
            sid = await node.pods.run(full_pod_config(), "")
            sb = node.pods.get(sid)
            assert sb.state == State.READY and sb.ips == ["10.0.0.2"] and sb.infra_pid > 0
            assert node.world.namespaces == set(sb.namespaces.values()) and sb.shm in node.world.mounts
            assert node.world.cgroups and node.world.networks == {sid}
            await node.pods.stop(sid)
            assert node.pods.get(sid).state == State.NOTREADY
            assert node.world.leftovers().keys() <= {"namespaces", "cgroups"}  # removed with the pod
            await node.pods.remove(sid)
            kinds = [(await anext(sub)).kind for _ in range(sub.pending())]
        assert kinds == [Kind.CREATED, Kind.STARTED, Kind.STOPPED, Kind.DELETED]
        assert node.world.leftovers() == {} and recorded(node) == [] and node.runtime.containers == {}
        assert len(node.pods.life.locks) == 0

    run(tmp_path, body)


def test_a_retry_after_the_client_deadline_joins_the_attempt(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        release = node.faults.hold("cni.setup")
        with pytest.raises(TimeoutError):  # the client's deadline; the work goes on
            await asyncio.wait_for(node.pods.run(pod_config(), ""), 0.05)
        retry = asyncio.ensure_future(node.pods.run(pod_config(), ""))
        await asyncio.sleep(0.05)
        assert not retry.done()  # waits for the same attempt
        release.set()
        sid = await retry
        assert await node.pods.run(pod_config(), "") == sid  # and a later call gets the same pod
        assert node.faults.calls.count("cni.setup") == 1 and len(recorded(node)) == 1
        other = pod_config()
        other.hostname = "elsewhere"
        with pytest.raises(AlreadyExists, match="already reserved for sandbox"):
            await node.pods.run(other, "")

    run(tmp_path, body)


def test_a_pod_being_created_is_not_listed_or_found(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        release = node.faults.hold("cni.setup")
        task = asyncio.ensure_future(node.pods.run(pod_config(), ""))
        await asyncio.sleep(0.05)
        (sb,) = node.pods.store.by_id.values()
        assert node.pods.list(None) == []
        with pytest.raises(NotFound):
            node.pods.get(sb.id)
        release.set()
        await task

    run(tmp_path, body)


# every host call of RunPodSandbox, in the order it makes them
RUN_STEPS = [
    "plan_cgroups", "ensure_cgroups", "create_namespaces", "mount_shm", "cni.setup",
    "runtime.run_detached", "apply_sysctls", "write_pod_files",
]  # fmt: skip


@pytest.mark.parametrize("step", RUN_STEPS)
def test_a_failure_at_each_step_undoes_them_all(tmp_path: Path, step: str) -> None:
    async def body(node: Node) -> None:
        node.faults.fail.add(step)
        with pytest.raises(Injected, match=step):
            await node.pods.run(full_pod_config(), "")
        assert recorded(node) == [] and node.pods.store.by_id == {} and node.pods.store.by_name == {}
        assert node.world.leftovers() == {} and node.runtime.containers == {}
        assert not node.pods.life.in_flight("p_ns_uid-p_0") and len(node.pods.life.locks) == 0
        node.faults.fail.clear()
        sid = await node.pods.run(full_pod_config(), "")  # the name is free again
        assert node.pods.get(sid).state == State.READY

    run(tmp_path, body)


def test_a_failed_undo_keeps_the_record_for_removal(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        node.faults.fail |= {"write_pod_files", "remove_cgroups"}
        with pytest.raises(Injected, match="write_pod_files"):
            await node.pods.run(full_pod_config(), "")
        (sid,) = recorded(node)
        assert node.pods.get(sid).state == State.NOTREADY and node.world.cgroups
        node.faults.fail.clear()
        await node.pods.remove(sid)
        assert recorded(node) == [] and node.world.leftovers() == {}

    run(tmp_path, body)


def test_unknown_handler(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        with pytest.raises(NotFound, match="no runtime handler 'kata' is configured"):
            await node.pods.run(pod_config(), "kata")
        assert recorded(node) == []

    run(tmp_path, body)


def test_a_pod_in_its_own_user_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userns, "check_reachable", lambda path: None)  # pytest's tmp dirs are 0700
    mapping = [pb.IDMapping(container_id=0, host_id=100000, length=65536)]
    config = pod_config()
    config.linux.security_context.namespace_options.userns_options.CopyFrom(
        pb.UserNamespace(mode=pb.POD, uids=mapping, gids=mapping)
    )

    async def body(node: Node) -> None:
        with pytest.raises(FailedPrecondition, match="cannot run pods in user namespaces"):
            await node.pods.run(config, "")  # the probe did not pass for this handler
        assert recorded(node) == []
        node.pods.handlers.features = {n: HandlerFeatures(user_namespaces=True) for n in node.pods.handlers.features}
        sid = await node.pods.run(config, "")
        sb = node.pods.get(sid)
        assert set(sb.namespaces) == {"user", "net", "uts", "ipc"}
        assert node.world.namespaces == set(sb.namespaces.values())
        await node.pods.remove(sid)
        assert node.world.leftovers() == {}

    run(tmp_path, body)


# --- recovery: the record states a killed RunPodSandbox leaves, step by step ------------------------

CG = "/sys/fs/cgroup/kubepods/pod1"


def _half_made(state_dir: str, sid: str, step: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(record fields, what exists on the host) right after ``step`` (a faults.STEPS name)."""
    ns = {k: f"{state_dir}/sandboxes/{sid}/{k}" for k in ("net", "uts", "ipc")}
    shm = f"{state_dir}/sandboxes/{sid}/shm"
    order: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        ("recorded", {}, {}),
        ("cgroups_planned", {"cgroups": [CG]}, {}),
        ("cgroups_made", {}, {"cgroups": {CG}}),
        ("namespaces_recorded", {"namespaces": ns}, {}),
        ("namespaces_made", {}, {"namespaces": set(ns.values())}),
        ("shm_recorded", {"shm": shm}, {}),
        ("shm_mounted", {}, {"mounts": {shm}}),
        ("network_recorded", {"network_added": True}, {}),
        ("cni_added", {}, {"networks": {sid}}),
        ("ips_recorded", {"ips": ["10.0.0.2"]}, {}),
        ("infra_recorded", {"infra_pid": -1}, {}),
        ("infra_started", {}, {"infra": True}),
        ("infra_pid_recorded", {"infra_pid": 4242, "infra_start": 77}, {}),
    ]
    fields: dict[str, Any] = {}
    world: dict[str, Any] = {}
    for name, f, w in order:
        fields |= f
        world |= w
        if name == step:
            return fields, world
    raise AssertionError(step)


HALF_DONE = [
    "recorded", "cgroups_planned", "cgroups_made", "namespaces_recorded", "namespaces_made", "shm_recorded",
    "shm_mounted", "network_recorded", "cni_added", "ips_recorded", "infra_recorded", "infra_started",
    "infra_pid_recorded",
]  # fmt: skip


@pytest.mark.parametrize("step", HALF_DONE)
def test_recovery_undoes_a_half_made_pod(tmp_path: Path, step: str) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "state").mkdir()
    node = Node(tmp_path)
    sid = "ab" * 32
    fields, world = _half_made(node.config.state_dir, sid, step)
    config = full_pod_config()
    sb = Sandbox(id=sid, name="p_ns_uid-p_0", fingerprint="x", handler="", state=State.CREATING, created_at=1,
                 config=config, **fields)  # fmt: skip
    SandboxStore(node.store).add(sb)
    node.world.cgroups |= world.get("cgroups", set())
    node.world.namespaces |= world.get("namespaces", set())
    node.world.mounts |= world.get("mounts", set())
    node.world.networks |= world.get("networks", set())
    if world.get("infra"):
        asyncio.run(node.runtime.run_detached(f"{sid}-infra", str(tmp_path), str(tmp_path / "infra.pid")))
    node.containers.close()
    node.store.close()

    async def main() -> None:
        after = node.reopened()  # the next daemon
        await after.start()
        assert recorded(after) == [] and after.pods.store.by_id == {}
        assert node.world.leftovers() == {} and node.runtime.containers == {}
        await after.close()

    asyncio.run(main())


def test_recovery_marks_a_pod_whose_namespaces_vanished_not_ready(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        sid = await node.pods.run(pod_config(), "")
        node.world.namespaces.clear()  # a reboot wiped /run
        await node.pods.recover()
        assert node.pods.get(sid).state == State.NOTREADY and node.world.networks == set()

    run(tmp_path, body)


def test_recovery_releases_networks_of_unknown_pods(tmp_path: Path) -> None:
    async def body(node: Node) -> None:
        node.world.networks.add("cd" * 32)
        await node.pods.recover()
        assert node.world.networks == set()

    run(tmp_path, body)
