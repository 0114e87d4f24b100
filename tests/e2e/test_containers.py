"""Containers end to end: a real crid runs busybox containers in real pods with runc under conmon:
their lifecycle, logs, exec, resources, lists, a second handler, restarts and crashes of the daemon.
Security settings and mounts: test_container_security.py."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.container_pod import CRI_LINE, Pod, env, log_text, pod, sc
from tests.e2e.harness import CridProcess
from tests.support.cni_net import Network

__all__ = ["env", "pod"]  # the fixtures: one daemon per module, a pod per test


def test_echo_writes_a_cri_log_line(pod: Pod) -> None:
    cid = pod.run("echo", ["sh", "-c", "echo hello world; echo oops >&2"])
    st = pod.wait(cid)
    assert (st.exit_code, st.reason) == (0, "Completed")
    lines = (pod.logs / "echo.log").read_text().splitlines()
    assert [CRI_LINE.match(line).group(2, 3, 4) for line in lines] == [  # type: ignore[union-attr]
        ("stdout", "F", "hello world"),
        ("stderr", "F", "oops"),
    ]
    assert st.started_at >= st.created_at > 0 and st.finished_at >= st.started_at
    assert st.log_path == str(pod.logs / "echo.log")
    assert st.image.image == pod.image and st.image_id.startswith("sha256:")


def test_exit_code_and_reason(pod: Pod) -> None:
    st = pod.wait(pod.run("exit3", ["sh", "-c", "exit 3"]))
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 3, "Error")


def test_oom_killed(pod: Pod) -> None:
    res = pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(memory_limit_in_bytes=32 << 20))
    # the main process fills tmpfs (charged to the container) past its limit and is killed
    st = pod.wait(pod.run("oom", ["dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=60"], linux=res))
    assert (st.exit_code, st.reason) == (137, "OOMKilled")
    # a child is OOM-killed but the main process exits 0: reason OOMKilled, exit code its own (as containerd)
    child = "dd if=/dev/zero of=/dev/shm/fill2 bs=1M count=60; rm -f /dev/shm/fill2; exit 0"
    st = pod.wait(pod.run("oomchild", ["sh", "-c", child], linux=res))
    assert (st.exit_code, st.reason) == (0, "OOMKilled")


def test_env_and_args_precedence(pod: Pod) -> None:
    code, out = pod.output(
        "env",
        ["sh", "-c"],
        args=["echo $FROM_IMAGE $OVERRIDE $FROM_CRI $0", "arg0"],
        envs=[pb.KeyValue(key="OVERRIDE", value=b"cri"), pb.KeyValue(key="FROM_CRI", value=b"yes")],
    )
    assert code == 0 and out.strip() == "1 cri yes arg0"


def test_exec_sync(pod: Pod) -> None:
    cid = pod.run("execme", ["sleep", "600"], linux=sc(run_as_user=pb.Int64Value(value=1000)))
    r = pod.exec(cid, ["sh", "-c", "id -u; echo err >&2; exit 7"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"1000\n", b"err\n", 7)
    t0 = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        pod.exec(cid, ["sleep", "30"], timeout=1)
    assert time.monotonic() - t0 < 10
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "timed out" in err.value.details()
    assert b"sleep 30" not in pod.exec(cid, ["ps", "-o", "stat,args"]).stdout  # killed and reaped, no zombie
    with pytest.raises(grpc.RpcError):  # the client's own deadline ends the command too
        pod.d.client.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["sleep", "31"]), timeout=1)
    time.sleep(0.5)
    assert b"sleep 31" not in pod.exec(cid, ["ps", "-o", "stat,args"]).stdout
    pod.d.client.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    with pytest.raises(grpc.RpcError) as err:
        pod.exec(cid, ["true"])
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def _runc_state(pod: Pod, cid: str) -> tuple[str, Path]:
    """runc's status of ``cid`` and its state dir."""
    root = Path(pod.d.state) / "runtime" / "runc"
    out = subprocess.run(["runc", "--root", str(root), "state", cid], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["status"], root / cid


def test_start_opens_runc_exec_fifo_itself(pod: Pod) -> None:
    """StartContainer reads runc's exec fifo (cri/runtime/exec_fifo.py): runc reports the container
    running and its fifo gone, as after `runc start`; an init that died first is refused cleanly."""
    cid = pod.create("fifo", ["sh", "-c", "echo started; sleep 600"])
    status, state_dir = _runc_state(pod, cid)
    assert status == "created" and (state_dir / "exec.fifo").exists()
    pod.d.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert _runc_state(pod, cid)[0] == "running" and not (state_dir / "exec.fifo").exists()
    assert pod.exec(cid, ["true"]).exit_code == 0
    deadline = time.monotonic() + 10
    while "started" not in log_text(pod.logs / "fifo.log") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "started" in log_text(pod.logs / "fifo.log")

    dead = pod.create("dead", ["sleep", "600"])
    info = pod.d.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=dead, verbose=True)).info
    os.kill(json.loads(info["info"])["pid"], signal.SIGKILL)  # runc init, still waiting for the start
    with pytest.raises(grpc.RpcError) as err:
        pod.d.client.runtime.StartContainer(pb.StartContainerRequest(container_id=dead), timeout=20)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert pod.wait(dead).state == pb.CONTAINER_EXITED
    assert pod.status(cid).state == pb.CONTAINER_RUNNING


def test_stop_grace_and_timeout(pod: Pod) -> None:
    graceful = pod.run("trap", ["sh", "-c", "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done"])
    time.sleep(0.5)
    pod.d.client.runtime.StopContainer(pb.StopContainerRequest(container_id=graceful, timeout=10))
    st = pod.status(graceful)
    assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 0)
    assert "got-term" in log_text(pod.logs / "trap.log")
    stubborn = pod.run("stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    time.sleep(0.5)
    t0 = time.monotonic()
    pod.d.client.runtime.StopContainer(pb.StopContainerRequest(container_id=stubborn, timeout=2))
    elapsed = time.monotonic() - t0
    st = pod.status(stubborn)
    assert st.state == pb.CONTAINER_EXITED and st.exit_code == 137
    assert 1.5 < elapsed < 8
    pod.d.client.runtime.StopContainer(pb.StopContainerRequest(container_id=stubborn, timeout=2))  # again: fine
    pod.d.client.runtime.StopContainer(pb.StopContainerRequest(container_id="0" * 64, timeout=2))


def test_reopen_log_after_rename(pod: Pod) -> None:
    cid = pod.run("rotate", ["sh", "-c", "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.1; done"])
    time.sleep(0.5)
    log = pod.logs / "rotate.log"
    log.rename(pod.logs / "rotate.log.1")
    pod.d.client.runtime.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    time.sleep(0.5)
    old = log_text(pod.logs / "rotate.log.1").split()
    new = log_text(log).split()
    assert new and old
    assert int(new[0].removeprefix("line")) > int(old[-1].removeprefix("line")) - 1
    assert not set(new) & set(old[:-1])


def test_update_container_resources(pod: Pod) -> None:
    cid = pod.run("upd", ["sleep", "600"])
    new = pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20, cpu_shares=512)
    pod.d.client.runtime.UpdateContainerResources(pb.UpdateContainerResourcesRequest(container_id=cid, linux=new))
    r = pod.exec(cid, ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/cpu/cpu.shares"])
    assert r.stdout.split() == [str(64 << 20).encode(), b"512"]
    assert pod.status(cid).resources.linux.memory_limit_in_bytes == 64 << 20


def test_lists_follow_every_state_change(pod: Pod) -> None:
    """The list replies crid keeps (kubelet lists every second with the same filters) change with each
    write: create, start, an exit of its own, stop, remove; the pod list with the pod's stop and removal."""
    rt = pod.d.client.runtime
    mine = pb.ContainerFilter(pod_sandbox_id=pod.id)

    def listed() -> dict[str, int]:
        return {c.id: c.state for c in rt.ListContainers(pb.ListContainersRequest(filter=mine)).containers}

    def pods() -> dict[str, int]:
        return {p.id: p.state for p in rt.ListPodSandbox(pb.ListPodSandboxRequest()).items}

    assert listed() == {} and pods()[pod.id] == pb.SANDBOX_READY
    quick, slow = pod.create("quick", ["sh", "-c", "sleep 0.3"]), pod.create("slow", ["sleep", "600"])
    assert listed() == {quick: pb.CONTAINER_CREATED, slow: pb.CONTAINER_CREATED}
    for cid in (quick, slow):
        rt.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert listed()[slow] == pb.CONTAINER_RUNNING
    pod.wait(quick)  # exits by itself: only the exit watcher writes the record
    assert listed() == {quick: pb.CONTAINER_EXITED, slow: pb.CONTAINER_RUNNING}
    rt.StopContainer(pb.StopContainerRequest(container_id=slow, timeout=0))
    assert listed() == {quick: pb.CONTAINER_EXITED, slow: pb.CONTAINER_EXITED}
    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=quick))
    assert listed() == {slow: pb.CONTAINER_EXITED}
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod.id))
    assert pods()[pod.id] == pb.SANDBOX_NOTREADY
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod.id))
    assert pod.id not in pods() and listed() == {}


def test_list_filters_and_status(pod: Pod) -> None:
    a = pod.run("lista", ["sleep", "600"], labels={"role": "a"})
    b = pod.create("listb", ["true"], labels={"role": "b"})

    def ids(f: pb.ContainerFilter) -> set[str]:
        return {c.id for c in pod.d.client.runtime.ListContainers(pb.ListContainersRequest(filter=f)).containers}

    assert ids(pb.ContainerFilter(pod_sandbox_id=pod.id)) == {a, b}
    assert ids(pb.ContainerFilter(label_selector={"role": "a"})) == {a}
    assert ids(pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_CREATED))) >= {b}
    assert ids(pb.ContainerFilter(id=a[:10])) == {a}
    resp = pod.d.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=a, verbose=True))
    info = json.loads(resp.info["info"])
    assert info["pid"] > 0 and info["runtimeSpec"]["process"]["args"] == ["sleep", "600"]
    streamed = {c.id for r in pod.d.client.runtime.StreamContainers(pb.StreamContainersRequest()) for c in r.containers}
    assert {a, b} <= streamed


@pytest.mark.parametrize("handler", ["runc2", "crun"])
def test_second_handler(env: tuple[CridProcess, str, Network], daemons: Any, handler: str) -> None:
    """A pod's runtime_handler picks the OCI runtime that runs its containers."""
    _, image, network = env
    handlers = {
        "runc": {"binary": "/usr/sbin/runc"},
        "runc2": {"binary": "/usr/sbin/runc"},
        "crun": {"binary": "/usr/bin/crun"},
    }
    alt = daemons.start("alt", runtime={"handlers": handlers}, **network.settings())
    alt.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    cfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=f"h-{handler}", namespace="e2e", uid=handler))
    try:
        pod_id = alt.client.runtime.RunPodSandbox(
            pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler)
        ).pod_sandbox_id
    except grpc.RpcError as exc:
        # Debian's crun 1.8 refuses hybrid cgroup hosts such as this one; its own words must reach the client
        if handler == "crun" and "hybrid" in exc.details():
            pytest.skip(f"crun cannot run on this host: {exc.details()}")
        raise
    try:
        ccfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=image), command=["sleep", "60"]
        )
        cid = alt.client.runtime.CreateContainer(
            pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=ccfg, sandbox_config=cfg)
        ).container_id
        alt.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        state = subprocess.run(
            [handlers[handler]["binary"], "--root", str(Path(alt.state) / "runtime" / handler), "state", cid],
            capture_output=True, text=True,
        )  # fmt: skip
        assert state.returncode == 0 and '"running"' in state.stdout, state.stderr  # that runtime holds it
    finally:
        alt.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        alt.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def test_restart_keeps_containers_and_sees_exits(env: tuple[CridProcess, str, Network]) -> None:
    d, image, _ = env
    pod = Pod(d, image, "restart")
    try:
        runner = pod.run("runner", ["sh", "-c", "while true; do echo tick; sleep 0.2; done"])
        ender = pod.run("ender", ["sh", "-c", "sleep 2; exit 5"])
        pid = json.loads(
            d.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=runner, verbose=True)).info["info"]
        )["pid"]
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        time.sleep(3)  # "ender" exits while crid is down
        assert Path(f"/proc/{pid}").exists()
        d.start()
        st = pod.status(ender)
        assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 5, "Error")
        assert st.finished_at < time.time_ns() - int(0.5e9)
        assert pod.status(runner).state == pb.CONTAINER_RUNNING
        size = (pod.logs / "runner.log").stat().st_size
        time.sleep(0.6)
        assert (pod.logs / "runner.log").stat().st_size > size  # still logging through its monitor
        # a normal restart too
        assert d.stop() == 0
        d.start()
        assert pod.status(runner).state == pb.CONTAINER_RUNNING
    finally:
        pod.remove()
    assert not Path(f"/proc/{pid}").exists()


def test_remove_everything_leaves_nothing(env: tuple[CridProcess, str, Network]) -> None:
    d, image, _ = env
    pod = Pod(d, image, "cleanup")
    ids = [pod.run(f"c{i}", ["sleep", "600"]) for i in range(3)]
    pod.remove()
    left = d.client.runtime.ListContainers(pb.ListContainersRequest()).containers
    assert not [c for c in left if c.pod_sandbox_id == pod.id]
    for cid in ids:
        assert not (Path(d.state) / "containers" / cid).exists()
        assert not (Path(d.root) / "containers" / cid).exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert f"{d.state}/containers" not in mounts and f"{d.state}/sandboxes/{pod.id}" not in mounts
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not [cid for cid in ids if cid in ps]


def test_no_log_path_still_runs(pod: Pod) -> None:
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="nolog"),
        image=pb.ImageSpec(image=pod.image),
        command=["sh", "-c", "echo x; exit 4"],
    )
    cid = pod.d.client.runtime.CreateContainer(
        pb.CreateContainerRequest(pod_sandbox_id=pod.id, config=cfg, sandbox_config=pod.config)
    ).container_id
    pod.d.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
    st = pod.wait(cid)
    assert (st.exit_code, st.log_path) == (4, "")
    assert list(pod.logs.iterdir()) == []


def test_create_retry_after_deadline_gets_the_same_container(
    env: tuple[CridProcess, str, Network], daemons: Any, tmp_path: Path
) -> None:
    _, image, network = env
    slow = tmp_path / "slowrunc"  # runc that takes 2 s to create a container
    slow.write_text('#!/bin/sh\ncase " $* " in *" create "*) sleep 2;; esac\nexec /usr/sbin/runc "$@"\n')
    slow.chmod(0o755)
    d = daemons.start(
        "slow",
        runtime={"handlers": {"runc": {"binary": "/usr/sbin/runc"}, "slow": {"binary": str(slow)}}},
        **network.settings(),
    )
    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    pcfg = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="slowpod", namespace="e2e", uid="slow"))
    pod_id = d.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pcfg, runtime_handler="slow")).pod_sandbox_id
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=image), command=["sleep", "60"]
    )
    req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=cfg, sandbox_config=pcfg)
    try:
        with pytest.raises(grpc.RpcError) as err:
            d.client.runtime.CreateContainer(req, timeout=0.5)
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cid = d.client.runtime.CreateContainer(req, timeout=30).container_id  # no "name is reserved"
        assert d.client.runtime.CreateContainer(req).container_id == cid
        assert [c.id for c in d.client.runtime.ListContainers(pb.ListContainersRequest()).containers] == [cid]
    finally:
        d.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        d.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def test_container_stats(pod: Pod) -> None:
    cid = pod.run("stats", ["sh", "-c", "head -c 20000000 /dev/zero > /big; while true; do :; done"], labels={"s": "1"})
    time.sleep(1.0)
    first = pod.d.client.runtime.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    time.sleep(0.5)
    listed = pod.d.client.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(label_selector={"s": "1"}))
    ).stats
    assert [s.attributes.id for s in listed] == [cid]
    second = listed[0]
    assert first.attributes.metadata.name == "stats" and first.cpu.timestamp > 0 and first.memory.timestamp > 0
    assert second.cpu.usage_core_nano_seconds.value > first.cpu.usage_core_nano_seconds.value > 0
    assert second.cpu.usage_nano_cores.value > 3 * 10**8  # a busy loop: most of a core
    assert second.memory.working_set_bytes.value > 0
    assert second.writable_layer.used_bytes.value >= 20_000_000 and second.writable_layer.inodes_used.value >= 1
    none = pod.d.client.runtime.ListContainerStats(
        pb.ListContainerStatsRequest(filter=pb.ContainerStatsFilter(label_selector={"s": "2"}))
    ).stats
    assert list(none) == []


def test_image_removed_while_a_container_uses_it(env: tuple[CridProcess, str, Network], daemons: Any) -> None:
    _, image, network = env
    d = daemons.start("gc", **network.settings())
    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    pod = Pod(d, image, "gcpod")
    try:
        cid = pod.run("user", ["sleep", "600"])
        snapshots = Path(d.root) / "snapshots"
        layers = sorted(p.name for p in snapshots.iterdir())
        d.client.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)))
        assert not d.client.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image))).HasField("image")
        assert sorted(p.name for p in snapshots.iterdir()) == layers  # still the container's rootfs
        assert pod.exec(cid, ["cat", "/etc/passwd"]).exit_code == 0
        d.client.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
        assert list(snapshots.iterdir()) == []  # collected with the last container that used them
    finally:
        pod.remove()


def _set_row(d: CridProcess, cid: str, **changes: Any) -> None:
    """Edit a container's stored record while crid is down (to stage a crash)."""
    import sqlite3

    db = sqlite3.connect(Path(d.root) / "metadata.db")
    state, data = db.execute("SELECT state, data FROM containers WHERE id = ?", (cid,)).fetchone()
    doc = json.loads(data)
    state = changes.pop("state", state)
    doc.update(changes)
    db.execute("UPDATE containers SET state = ?, data = ? WHERE id = ?", (state, json.dumps(doc), cid))
    db.commit()
    db.close()


def _own_daemon(env: tuple[CridProcess, str, Network], daemons: Any, name: str) -> tuple[CridProcess, Pod]:
    """A daemon of the test's own (it gets killed), with the image pulled and a pod."""
    _, image, network = env
    d = daemons.start(name, **network.settings())
    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    return d, Pod(d, image, f"{name}pod")


def _sigkill(d: CridProcess) -> None:
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()


def test_crash_between_start_and_its_record(env: tuple[CridProcess, str, Network], daemons: Any) -> None:
    d, pod = _own_daemon(env, daemons, "crash")
    try:
        cid = pod.run("c", ["sleep", "600"])
        _sigkill(d)
        _set_row(d, cid, state="created", started_at=0)  # as if crid died right after `runc start`
        d.start()
        st = pod.status(cid)
        assert st.state == pb.CONTAINER_RUNNING and st.started_at > 0
        assert pod.exec(cid, ["true"]).exit_code == 0
    finally:
        pod.remove()


def test_recovery_never_trusts_a_reused_pid(env: tuple[CridProcess, str, Network], daemons: Any) -> None:
    d, pod = _own_daemon(env, daemons, "reuse")
    stranger = subprocess.Popen(["sleep", "600"])
    try:
        cid = pod.run("c", ["sleep", "600"])
        _sigkill(d)
        # the container, its monitor and the runtime's state vanish (as in a reboot), and the pid is reused
        runtime_root = str(Path(d.state) / "runtime" / "runc")
        subprocess.run(["runc", "--root", runtime_root, "delete", "--force", cid], check=True)
        (Path(d.state) / "exits" / cid).unlink(missing_ok=True)
        _set_row(d, cid, pid=stranger.pid)
        d.start()
        st = pod.status(cid)
        assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 255, "Unknown")
        t0 = time.monotonic()
        d.client.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
        assert time.monotonic() - t0 < 2
        assert stranger.poll() is None  # the stranger that got the pid is untouched
    finally:
        stranger.kill()
        stranger.wait()
        pod.remove()
