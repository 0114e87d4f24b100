"""Crash consistency at the finest grain: crid dies right after each durable step.

For every step of cri/faults.py, a crid started with ``CRID_FAULT_AFTER=<step>``
drives the lifecycle (pull, run a pod with CNI networking and an infra
process, create, start, stop, remove, stop the pod, remove it) until it exits
hard right after that step. A normal crid then starts on the same
directories. It must report the image, the pod and the container each either
fully there, in the state the step implies, or fully gone (no record left
either); answer Status, Stop and Remove on them sanely, twice (they are
idempotent); finish the lifecycle as kubelet would retry it; and leave
nothing behind: no record, file, runtime state, IP reservation, blob or
snapshot (and the module's leak check: mounts, netns, links, cgroups,
processes).
"""

import contextlib
import os
import queue
import secrets
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from cri import faults
from cri.api.v1 import api_pb2 as pb
from cri.runtime import cgroups
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support.cni_net import Network
from tests.support.registry import Registry

OPS = (
    "PullImage",
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
)
# a container that ignores the stop signal (as exec keeps an ignored signal ignored): only SIGKILL stops it
COMMAND = ["sh", "-c", "trap '' TERM; exec sleep 600"]
RUNC = "/usr/sbin/runc"
WORKERS = 3
NETWORK_INDEX = 201  # 10.123.201.0/24 and the next WORKERS - 1
# the state a record holds (see sandbox_store.py, container_store.py) for each state the CRI reports
POD_RECORD: dict[int, str] = {pb.SANDBOX_READY: "ready", pb.SANDBOX_NOTREADY: "notready"}
CONTAINER_RECORD: dict[int, str] = {
    pb.CONTAINER_CREATED: "created",
    pb.CONTAINER_RUNNING: "running",
    pb.CONTAINER_EXITED: "exited",
}


@dataclass(frozen=True)
class World:
    ref: str
    image_id: str
    networks: "queue.Queue[Network]"  # one per worker


@pytest.fixture(scope="module")
def world(e2e_base: Path) -> Iterator[World]:
    """One registry with one small image, and a CNI network per worker, for every step."""
    base = Path(tempfile.mkdtemp(prefix="steps", dir=e2e_base))
    networks = [Network(base / f"net{i}", NETWORK_INDEX + i) for i in range(WORKERS)]
    image = ob.busybox_image("gzip")
    pool: queue.Queue[Network] = queue.Queue()
    for n in networks:
        pool.put(n)
    try:
        with Registry(base / "reg") as reg:
            reg.push("e2e/steps", "1", image)
            yield World(f"{reg.host}/e2e/steps:1", image.image_id, pool)
    finally:
        for n in networks:
            n.cleanup()


def expected(step: str) -> tuple[bool, int | None, int | None]:
    """What a restarted crid reports after a crash right after ``step``:
    (image there, pod state, container state), None for gone. An object
    exists once its creation is recorded complete, until its record is
    deleted; recovery rolls a started container forward."""
    op, what = step.split(".")
    i = OPS.index(op)
    image = i > 0 or what == "image_recorded"
    pod: int | None = None
    if op == "RunPodSandbox":
        pod = pb.SANDBOX_READY if what == "ready_recorded" else None
    elif op in ("CreateContainer", "StartContainer", "StopContainer", "RemoveContainer"):
        pod = pb.SANDBOX_READY
    elif op == "StopPodSandbox":
        pod = pb.SANDBOX_NOTREADY  # a stop cut short leaves a pod that is not ready, for a retry to finish
    elif op == "RemovePodSandbox" and what != "record_deleted":
        pod = pb.SANDBOX_NOTREADY
    container: int | None = None
    if op == "CreateContainer":
        container = pb.CONTAINER_CREATED if what == "created_recorded" else None
    elif op == "StartContainer":
        container = pb.CONTAINER_RUNNING  # `runtime start` ran: recovery finds it running
    elif op == "StopContainer":
        container = pb.CONTAINER_RUNNING if what == "signalled" else pb.CONTAINER_EXITED
    elif op == "RemoveContainer" and what != "record_deleted":
        container = pb.CONTAINER_EXITED
    return image, pod, container


def code_of(call: Callable[[object], object], request: object) -> grpc.StatusCode:
    try:
        call(request)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def records(d: CridProcess) -> dict[str, str]:
    """Every pod and container record in crid's database: id -> state (read beside the daemon: WAL)."""
    with contextlib.closing(sqlite3.connect(f"file:{d.root}/metadata.db?mode=ro", uri=True)) as db:
        return {row[0]: row[1] for t in ("sandboxes", "containers") for row in db.execute(f"SELECT id, state FROM {t}")}


class Lifecycle:
    """The CRI calls kubelet makes for one pod with one container, on one daemon."""

    def __init__(self, d: CridProcess, world: World, network: Network, step: str) -> None:
        self.d, self.world, self.network, self.step = d, world, network, step
        self.rt, self.img = d.client.runtime, d.client.image
        name = f"p{secrets.token_hex(3)}"
        self.pod_config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="e2e", uid=f"uid-{name}"),
            hostname=name,
            # a cgroup parent crid has to make: the cgroup steps happen
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"/crid-steps-{name}"),
        )
        self.container_config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="c"), image=pb.ImageSpec(image=world.ref), command=COMMAND
        )
        self.pod_id = ""
        self.cid = ""
        self.reserved = set(network.reservations())  # those of steps before: theirs to report
        # the stop signal (and its wait) only where its step is the one under test; SIGKILL at once elsewhere
        self.stop_timeout = 1 if step == "StopContainer.signalled" else 0

    # --- the operations, as first made -------------------------------------------------

    def call(self, op: str) -> None:
        getattr(self, op)()

    def PullImage(self) -> None:
        ref = self.img.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=self.world.ref)), timeout=60).image_ref
        assert ref == self.world.image_id

    def RunPodSandbox(self) -> None:
        req = pb.RunPodSandboxRequest(config=self.pod_config)
        pod_id = self.rt.RunPodSandbox(req, timeout=60).pod_sandbox_id
        assert not self.pod_id or pod_id == self.pod_id, "a retry got another pod"
        self.pod_id = pod_id

    def CreateContainer(self) -> None:
        req = pb.CreateContainerRequest(
            pod_sandbox_id=self.pod_id, config=self.container_config, sandbox_config=self.pod_config
        )
        cid = self.rt.CreateContainer(req, timeout=60).container_id
        assert not self.cid or cid == self.cid, "a retry got another container"
        self.cid = cid

    def StartContainer(self) -> None:
        self.rt.StartContainer(pb.StartContainerRequest(container_id=self.cid), timeout=60)

    def StopContainer(self) -> None:
        timeout = self.stop_timeout
        if timeout:  # the signal must find the trap set, not the shell starting
            self.wait_for(lambda: self.exec(["pidof", "sleep"]) == 0)
        self.rt.StopContainer(pb.StopContainerRequest(container_id=self.cid, timeout=timeout), timeout=60)

    def RemoveContainer(self) -> None:
        self.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=self.cid), timeout=60)

    def StopPodSandbox(self) -> None:
        self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=self.pod_id), timeout=60)

    def RemovePodSandbox(self) -> None:
        self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=self.pod_id), timeout=60)

    def exec(self, cmd: list[str]) -> int:
        req = pb.ExecSyncRequest(container_id=self.cid, cmd=cmd, timeout=10)
        return int(self.rt.ExecSync(req, timeout=20).exit_code)

    @staticmethod
    def wait_for(condition: Callable[[], bool], seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)

    def drive(self) -> str:
        """Make the calls in order until one fails; returns the operation that failed."""
        for op in OPS:
            try:
                self.call(op)
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE, (op, exc.code(), exc.details())
                return op
        raise AssertionError("the lifecycle finished: the fault never happened")

    # --- after the restart -----------------------------------------------------------

    def check(self) -> None:
        """The state the step implies, through every read RPC and crid's own records."""
        image, pod, container = expected(self.step)
        found = self.img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=self.world.ref))).image
        assert found.id == (self.world.image_id if image else ""), found
        if not image:  # a pull cut short keeps no blob or snapshot either
            assert [i.id for i in self.img.ListImages(pb.ListImagesRequest()).images] == []
            assert self.store_files() == []

        pods = self.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
        if pod is None:
            assert list(pods) == [], pods
        else:
            assert [(p.metadata.name, p.state) for p in pods] == [(self.pod_config.metadata.name, pod)], pods
            self.pod_id = self.pod_id or pods[0].id  # RunPodSandbox's reply was lost with the crash
            assert pods[0].id == self.pod_id
            status = self.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=self.pod_id)).status
            assert status.state == pod
            if pod == pb.SANDBOX_READY:
                assert status.network.ip.startswith(self.network.subnet_prefix), status
        if pod is None and self.pod_id:
            gone = code_of(self.rt.PodSandboxStatus, pb.PodSandboxStatusRequest(pod_sandbox_id=self.pod_id))
            assert gone == grpc.StatusCode.NOT_FOUND

        listed = self.rt.ListContainers(pb.ListContainersRequest()).containers
        if container is None:
            assert list(listed) == [], listed
        else:
            assert [(c.metadata.name, c.state) for c in listed] == [("c", container)], listed
            self.cid = self.cid or listed[0].id
            assert listed[0].id == self.cid
            st = self.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=self.cid)).status
            assert st.state == container
            if container == pb.CONTAINER_EXITED:
                assert (st.exit_code, st.reason) == (137, "Error"), st  # SIGKILL, seen by its monitor
            if container != pb.CONTAINER_CREATED:
                assert st.started_at > 0
        if container is None and self.cid:
            gone = code_of(self.rt.ContainerStatus, pb.ContainerStatusRequest(container_id=self.cid))
            assert gone == grpc.StatusCode.NOT_FOUND
        # no hidden record: a half-made pod or container is undone, not kept in "creating"
        states = records(self.d)
        want = [] if pod is None else [POD_RECORD[pod]]
        want += [] if container is None else [CONTAINER_RECORD[container]]
        assert sorted(states.values()) == sorted(want), states

    def finish(self, crashed: str) -> None:
        """Retry the call the crash cut short and make the rest, each repeated
        call of the teardown twice (idempotent), then remove the image."""
        self.stop_timeout = 0
        for op in OPS[OPS.index(crashed) :]:
            if op == "StartContainer" and self.state() != pb.CONTAINER_CREATED:
                continue  # started before the crash: kubelet would not start it again
            self.call(op)
            if op in ("StopContainer", "RemoveContainer", "StopPodSandbox", "RemovePodSandbox"):
                self.call(op)
            if op == "CreateContainer":
                assert self.state() == pb.CONTAINER_CREATED
            if op == "StartContainer":
                assert self.state() == pb.CONTAINER_RUNNING
            if op == "StopContainer":
                assert self.state() == pb.CONTAINER_EXITED
        assert self.state() is None
        for _ in range(2):
            self.img.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=self.world.ref)))

    def state(self) -> int | None:
        listed = self.rt.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(id=self.cid))).containers
        return listed[0].state if self.cid and listed else None

    # --- nothing left --------------------------------------------------------------------

    def store_files(self) -> list[str]:
        dirs = ("content/blobs/sha256", "content/ingest", "snapshots")
        return sorted(str(p) for d in dirs for p in (Path(self.d.root) / d).glob("*"))

    def leftovers(self) -> list[str]:
        """What of the pod, the container and the image is still anywhere."""
        state, root = Path(self.d.state), Path(self.d.root)
        found = [f"record {i} ({s})" for i, s in records(self.d).items()]
        for d in (state / "sandboxes", state / "containers", state / "exits", state / "attach", root / "sandboxes",
                  root / "containers", root / "cni" / "results"):  # fmt: skip
            found += [str(p) for p in d.glob("*")]
        found += self.store_files()
        runc = subprocess.run(
            [RUNC, "--root", str(state / "runtime" / "runc"), "list", "-q"], capture_output=True, text=True, check=True
        )
        found += [f"runc container {name}" for name in runc.stdout.split()]
        found += [f"IP reservation {ip}" for ip in set(self.network.reservations()) - self.reserved]
        return found

    def tidy(self) -> None:
        """After a failed check: remove what is left through crid, so that the next steps start clean."""
        with contextlib.suppress(grpc.RpcError):
            for p in self.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
                self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id))
                self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))


def run_step(step: str, world: World, base: Path) -> None:
    """One step's walk: crash right after it, restart, check, finish, nothing left."""
    network = world.networks.get()  # this worker's own: its IP reservations are this step's
    d = CridProcess(base, "crid", network.settings(), env={faults.ENV: step})
    try:
        d.start()
        life = Lifecycle(d, world, network, step)
        crashed = life.drive()
        assert crashed == step.split(".")[0]
        assert d.proc is not None and d.proc.wait(10) == faults.EXIT_CODE
        assert [r["step"] for r in d.log_records("fault injected: exiting")] == [step]

        d.env = {}
        d.start()
        try:
            life.check()
            life.finish(crashed)
        except BaseException:
            life.tidy()
            raise
        assert life.leftovers() == []
        cgroup = life.pod_config.linux.cgroup_parent.lstrip("/")
        assert [h for h in cgroups.hierarchies() if os.path.exists(os.path.join(h, cgroup))] == []
    except BaseException as exc:
        exc.add_note(f"--- log of {d.dir} ---\n{d.log_text()}")
        raise
    finally:
        d.stop()  # graceful: the harness records files of pods and containers crid no longer has
        world.networks.put(network)


@pytest.fixture(scope="module")
def walks(world: World, e2e_base: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Future[None]]]:
    """The walks of the selected steps, WORKERS at a time (each has its own daemon
    and directories): two daemon startups are most of a step's time."""
    selected = [
        str(item.callspec.params["step"])
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.module is request.module
        and item.originalname == "test_crash_after"
    ]
    base = Path(tempfile.mkdtemp(prefix="walk", dir=e2e_base))
    with ThreadPoolExecutor(WORKERS, thread_name_prefix="walk") as pool:
        futures = {s: pool.submit(run_step, s, world, Path(tempfile.mkdtemp(prefix="s", dir=base))) for s in selected}
        try:
            yield futures
        finally:
            for f in futures.values():
                f.cancel()


def test_every_operation_has_steps() -> None:
    assert {s.split(".")[0] for s in faults.STEPS} == set(OPS)


@pytest.mark.parametrize("step", faults.STEPS)
def test_crash_after(step: str, walks: dict[str, Future[None]]) -> None:
    walks[step].result()
