"""The container state machine on a fake OCI runtime and host (no root):
a retried CreateContainer joins the attempt in flight, a failure at any step
undoes it, StopContainer escalates from the stop signal to SIGKILL, exits
are recorded as conmon reports them, and startup recovery finishes each
half-done record a killed daemon can leave."""

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cri.errors import AlreadyExists, FailedPrecondition, NotFound
from cri.runtime.container_store import Container, ContainerStore, State
from cri.runtime.events import Kind
from cri.runtime.handlers import HandlerFeatures
from tests.unit.runtime_fakes import Injected, Node, container_config, pod_config

TIMEOUT = 10.0


def run(tmp_path: Path, body: Callable[[Node, str], Awaitable[None]]) -> Node:
    """``body(node, pod id)`` with a ready pod."""

    async def main() -> Node:
        node = Node(tmp_path)
        await node.start()
        try:
            sid = await node.pods.run(pod_config(), "")
            await asyncio.wait_for(body(node, sid), TIMEOUT)
        finally:
            await node.close()
        return node

    return asyncio.run(main())


def recorded(node: Node) -> dict[str, str]:
    """Container id -> state, from the database (not the memory mirror)."""
    return {row["id"]: row["state"] for row in node.store.db.execute("SELECT id, state FROM containers")}


async def exited(node: Node, c: Container) -> None:
    await node.containers.exits.event(c.id).wait()


def exists(*paths: str) -> bool:
    return any(os.path.exists(p) for p in paths)


async def running(node: Node, sid: str, name: str = "c") -> Container:
    cid = await node.containers.create(sid, container_config(name))
    await node.containers.start(cid)
    c = node.containers.get(cid)
    assert c.state == State.RUNNING
    return c


def test_create_start_stop_remove_leaves_nothing(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        with node.pods.events.subscribe() as sub:
            cid = await node.containers.create(sid, container_config())
            c = node.containers.get(cid)
            assert c.state == State.CREATED and (c.uid, c.gid) == (1000, 1000) and c.pid > 0
            assert recorded(node) == {cid: "created"}
            await node.containers.start(cid)
            await node.containers.stop(cid, 5)
            assert (c.state, c.exit_code, c.reason) == (State.EXITED, 0, "Completed")
            await node.containers.remove(cid)
            kinds = [(await anext(sub)).kind for _ in range(sub.pending())]
        assert kinds == [Kind.CREATED, Kind.STARTED, Kind.STOPPED, Kind.DELETED]
        assert recorded(node) == {} and cid not in node.runtime.containers
        assert not exists(node.containers.bundle(cid), node.containers.persist(cid))
        assert node.world.mounts == {node.pods.get(sid).shm} and len(node.containers.life.locks) == 0
        await node.pods.remove(sid)
        assert node.world.leftovers() == {}

    run(tmp_path, body)


def test_a_retry_after_the_client_deadline_joins_the_attempt(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        release = node.faults.hold("runtime.create")
        with pytest.raises(TimeoutError):  # the client's deadline; the work goes on
            await asyncio.wait_for(node.containers.create(sid, container_config()), 0.05)
        retry = asyncio.ensure_future(node.containers.create(sid, container_config()))
        await asyncio.sleep(0.05)
        assert not retry.done() and node.containers.list(None) == []  # being created: not listed yet
        release.set()
        cid = await retry
        assert await node.containers.create(sid, container_config()) == cid
        assert node.faults.calls.count("runtime.create") == 1 and recorded(node) == {cid: "created"}
        with pytest.raises(AlreadyExists, match="already reserved for container"):
            await node.containers.create(sid, container_config(labels={"other": "config"}))

    run(tmp_path, body)


def test_refusals(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        with pytest.raises(NotFound, match="pod sandbox 'nope' not found"):
            await node.containers.create("nope", container_config())
        bad = container_config()
        bad.image.image = "missing:1"
        with pytest.raises(NotFound, match="pull it first"):
            await node.containers.create(sid, bad)
        cid = await node.containers.create(sid, container_config())
        await node.containers.start(cid)
        with pytest.raises(FailedPrecondition, match="is running, not created"):
            await node.containers.start(cid)
        await node.pods.stop(sid)  # takes its containers with it
        assert node.containers.get(cid).state == State.EXITED
        with pytest.raises(FailedPrecondition, match="is not ready"):
            await node.containers.create(sid, container_config("d"))
        assert list(recorded(node)) == [cid]

    run(tmp_path, body)


# every host and runtime call of CreateContainer, in the order it makes them
CREATE_STEPS = ["mount_rootfs", "build_spec", "runtime.create"]


@pytest.mark.parametrize("step", CREATE_STEPS)
def test_a_failure_at_each_step_undoes_it(tmp_path: Path, step: str) -> None:
    async def body(node: Node, sid: str) -> None:
        node.faults.fail.add(step)
        with pytest.raises(Injected, match=step):
            await node.containers.create(sid, container_config())
        assert recorded(node) == {} and node.containers.store.by_id == {} and node.containers.store.by_name == {}
        assert node.world.mounts == {node.pods.get(sid).shm} and list(node.runtime.containers) == [f"{sid}-infra"]
        await node.containers.trash.drain(5)
        assert os.listdir(os.path.join(node.config.state_dir, "containers")) == []
        assert len(node.containers.life.locks) == 0
        node.faults.fail.clear()
        cid = await node.containers.create(sid, container_config())  # the name is free again
        assert node.containers.get(cid).state == State.CREATED

    run(tmp_path, body)


def test_a_failed_undo_keeps_the_record_for_removal(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        node.faults.fail |= {"runtime.create", "unmount"}
        with pytest.raises(Injected, match="unmount"):  # the undo's error, as before
            await node.containers.create(sid, container_config())
        ((cid, state),) = recorded(node).items()
        c = node.containers.get(cid)
        assert (state, c.exit_code, c.reason) == ("exited", 255, "CreateFailed")
        assert c.message == "create failed: runtime.create"
        node.faults.fail.clear()
        await node.containers.remove(cid)
        assert recorded(node) == {} and node.world.mounts == {node.pods.get(sid).shm}

    run(tmp_path, body)


# --- stop ----------------------------------------------------------------------------------------------


def test_stop_signal_is_enough(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        c = await running(node, sid)
        await node.containers.stop(c.id, 5)
        assert node.runtime.kills == [(c.id, "15")] and (c.exit_code, c.reason) == (0, "Completed")

    run(tmp_path, body)


def test_stop_escalates_to_sigkill_after_the_timeout(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        node.runtime.deliver = {"KILL": 137}  # the process ignores SIGTERM
        c = await running(node, sid)
        began = time.monotonic()
        await node.containers.stop(c.id, 1)
        assert time.monotonic() - began >= 1.0
        assert node.runtime.kills == [(c.id, "15"), (c.id, "KILL")]
        assert (c.state, c.exit_code, c.reason) == (State.EXITED, 137, "Error")
        assert recorded(node) == {c.id: "exited"}

    run(tmp_path, body)


def test_stop_timeout_zero_kills_at_once(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        c = await running(node, sid)
        await node.containers.stop(c.id, 0)
        assert node.runtime.kills == [(c.id, "KILL")] and c.exit_code == 137

    run(tmp_path, body)


def test_stop_kills_the_process_itself_when_the_runtime_does_not_deliver(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        node.runtime.deliver = {}
        c = await running(node, sid)
        await node.containers.stop(c.id, 0)
        assert node.world.kills == [(c.pid, 9)] and (c.exit_code, c.reason) == (137, "Error")

    run(tmp_path, body)


def test_stop_gives_up_waiting_and_records_the_exit(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        node.runtime.deliver, node.runtime.pid_kills_work = {}, False
        c = await running(node, sid)
        await node.containers.stop(c.id, 0)
        assert (c.state, c.exit_code) == (State.EXITED, 137)
        assert c.message == "the container did not report an exit after SIGKILL"

    run(tmp_path, body)


def test_stop_returns_once_the_runtime_has_deleted_the_container(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        c = await running(node, sid)
        await node.containers.stop(c.id, 0)
        assert c.id not in node.runtime.containers and node.runtime.deletes == [c.id]
        await node.containers.stop(c.id, 0)  # again: nothing more
        await node.containers.remove(c.id)
        assert node.runtime.deletes == [c.id]  # RemoveContainer needs no runtime delete of its own

    run(tmp_path, body)


def test_a_failed_delete_at_the_exit_is_done_again_at_removal(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        c = await running(node, sid)
        node.faults.fail.add("runtime.delete")
        await node.containers.stop(c.id, 0)
        assert c.state == State.EXITED and c.id in node.runtime.containers
        node.faults.fail.clear()
        await node.containers.remove(c.id)
        assert node.runtime.deletes == [c.id] and c.id not in node.runtime.containers  # the failed one is not logged

    run(tmp_path, body)


# --- exits -----------------------------------------------------------------------------------------------


def test_an_exit_is_recorded_when_conmon_writes_it(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        c = await running(node, sid)
        with node.pods.events.subscribe() as sub:
            node.runtime.exit(c.id, 3)
            await exited(node, c)
            event = await anext(sub)
        assert (c.exit_code, c.reason, event.kind, event.container_id) == (3, "Error", Kind.STOPPED, c.id)
        assert c.finished_at >= c.started_at and recorded(node) == {c.id: "exited"}
        assert await node.containers.exits.runtime_deleted(c.id) and c.id not in node.runtime.containers

    run(tmp_path, body)


def test_an_oom_kill_is_recorded_as_such(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        c = await running(node, sid)
        Path(node.containers.bundle(c.id), "oom").touch()  # noqa: ASYNC240 (conmon's mark)
        node.runtime.exit(c.id, 137)
        await exited(node, c)
        assert (c.exit_code, c.reason) == (137, "OOMKilled")

    run(tmp_path, body)


def test_start_through_the_runtime_unless_the_exec_fifo_can_do_it(tmp_path: Path) -> None:
    """With a runc 1.x handler, StartContainer opens the exec fifo itself (exec_fifo.py); a container
    with poststart hooks, or whose fifo is not there, is started by the runtime's ``start``."""

    async def body(node: Node, sid: str) -> None:
        node.containers.handlers.features = {
            n: HandlerFeatures(exec_fifo=True) for n in node.containers.handlers.features
        }
        plain = await node.containers.create(sid, container_config("plain"))
        await node.containers.start(plain)  # no fifo in the fake runtime's state dir
        assert node.runtime.containers[plain].status == "running"

        build = node.system.build_spec
        node.system.build_spec = lambda inputs: {**build(inputs), "hooks": {"poststart": [{"path": "/bin/true"}]}}  # type: ignore[method-assign]
        hooked = await node.containers.create(sid, container_config("hooked"))
        fifo = Path(node.containers.handlers.exec_fifo_dir("", hooked), "exec.fifo")
        fifo.parent.mkdir(parents=True)
        os.mkfifo(fifo)
        await node.containers.start(hooked)
        assert node.runtime.containers[hooked].status == "running" and exists(str(fifo))  # left to runc
        assert node.containers.get(hooked).state == State.RUNNING

    run(tmp_path, body)


def test_an_exit_during_start_is_recorded_after_it(tmp_path: Path) -> None:
    async def body(node: Node, sid: str) -> None:
        cid = await node.containers.create(sid, container_config())
        release = node.faults.hold("runtime.start")
        start = asyncio.ensure_future(node.containers.start(cid))
        await asyncio.sleep(0.02)
        node.runtime.exit(cid, 0)  # the process is gone before `runtime start` returned
        await asyncio.sleep(0.05)
        c = node.containers.get(cid)
        assert c.state == State.CREATED  # not recorded while being started
        release.set()
        await start
        assert (c.state, c.exit_code) == (State.EXITED, 0) and c.started_at > 0

    run(tmp_path, body)


# --- recovery -----------------------------------------------------------------------------------------


def _recover(
    tmp_path: Path,
    prepare: Callable[[Node, str], Awaitable[Container]],
    while_down: Callable[[Node, Container], None] = lambda node, c: None,
) -> tuple[Node, Container | None, dict[str, str]]:
    """A container made by ``prepare``, then crid killed and a new one recovering it:
    the new node (closed), the container's record after recovery, and the rows."""

    async def before() -> tuple[Node, str]:
        node = Node(tmp_path)
        await node.start()
        sid = await node.pods.run(pod_config(), "")
        c = await prepare(node, sid)
        node.containers.close()
        node.store.close()
        while_down(node, c)
        return node, c.id

    node, cid = asyncio.run(before())

    async def after() -> tuple[Node, Container | None, dict[str, str]]:
        again = node.reopened()
        await again.start()
        c, rows = again.containers.store.by_id.get(cid), recorded(again)
        await again.close()
        return again, c, rows

    return asyncio.run(after())


def _creating(**fields: Any) -> Callable[[Node, str], Awaitable[Container]]:
    async def prepare(node: Node, sid: str) -> Container:
        c = Container(id="ef" * 32, name="c_p_ns_uid-p_0", fingerprint="x", sandbox_id=sid,
                      state=State.CREATING, created_at=1, config=container_config(), **fields)  # fmt: skip
        ContainerStore(node.store).add(c)
        os.makedirs(node.containers.bundle(c.id))
        if fields.get("rootfs_mounted"):
            node.world.mounts.add(os.path.join(node.containers.bundle(c.id), "rootfs"))
        if fields.get("pid"):
            await node.runtime.create(_monitor_spec(node, c.id))
        return c

    return prepare


def _monitor_spec(node: Node, cid: str) -> Any:
    from cri.runtime.monitor import MonitorSpec

    exits = os.path.join(node.config.state_dir, "exits")
    return MonitorSpec(cid, node.containers.bundle(cid), "", exits, "", "")


@pytest.mark.parametrize(
    "fields",
    [{}, {"rootfs_mounted": True}, {"rootfs_mounted": True, "pid": 1}],
    ids=["recorded", "rootfs_mounted", "runtime_created"],
)
def test_recovery_undoes_a_half_made_container(tmp_path: Path, fields: dict[str, Any]) -> None:
    node, c, rows = _recover(tmp_path, _creating(**fields))
    assert c is None and rows == {}
    assert [k for k in node.runtime.containers if not k.endswith("-infra")] == []
    assert len(node.world.mounts) == 1  # the pod's /dev/shm only


def test_recovery_keeps_a_container_that_still_runs(tmp_path: Path) -> None:
    _, c, _ = _recover(tmp_path, running)
    assert c is not None and c.state == State.RUNNING


def test_recovery_records_an_exit_that_happened_while_crid_was_down(tmp_path: Path) -> None:
    def while_down(node: Node, c: Container) -> None:
        node.runtime.exit(c.id, 7)  # conmon still writes the exit file

    _, c, rows = _recover(tmp_path, running, while_down)
    assert c is not None and rows == {c.id: c.state.value}
    assert (c.state, c.exit_code, c.reason) == (State.EXITED, 7, "Error")


def test_recovery_finishes_a_start_cut_short(tmp_path: Path) -> None:
    async def prepare(node: Node, sid: str) -> Container:
        cid = await node.containers.create(sid, container_config())
        node.runtime.containers[cid].status = "running"  # `runtime start` ran, crid died before recording it
        return node.containers.get(cid)

    _, c, rows = _recover(tmp_path, prepare)
    assert c is not None and rows == {c.id: c.state.value}
    assert c.state == State.RUNNING and c.started_at > 0


def test_recovery_of_a_container_whose_process_and_monitor_are_gone(tmp_path: Path) -> None:
    async def prepare(node: Node, sid: str) -> Container:
        c = await running(node, sid)
        node.world.processes.pop(c.pid)  # a reboot: no process, no monitor, no exit file
        node.runtime.containers.pop(c.id)
        return c

    _, c, rows = _recover(tmp_path, prepare)
    assert c is not None and rows == {c.id: c.state.value}
    assert (c.state, c.exit_code, c.reason) == (State.EXITED, 255, "Unknown")
    assert c.message == "the container's process and monitor are gone"


def test_recovery_waits_for_the_monitor_of_a_process_just_gone(tmp_path: Path) -> None:
    async def prepare(node: Node, sid: str) -> Container:
        c = await running(node, sid)
        node.world.processes.pop(c.pid)
        node.world.monitors[node.containers.bundle(c.id)] = 99  # conmon still runs: it writes the file soon
        exit_file = Path(node.config.state_dir, "exits", c.id)
        threading_timer(0.3, lambda: exit_file.write_text("5"))
        return c

    _, c, rows = _recover(tmp_path, prepare)
    assert c is not None and rows == {c.id: c.state.value}
    assert (c.state, c.exit_code) == (State.EXITED, 5)


def threading_timer(seconds: float, fn: Callable[[], object]) -> None:
    import threading

    t = threading.Timer(seconds, fn)
    t.daemon = True
    t.start()
