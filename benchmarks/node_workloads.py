"""A full node: pods added up to 110 (kubelet's default maximum), each with one
sleeping busybox container, and what kubelet's calls cost along the way.

At 1, 20, 55 and 110 running pods: RunPodSandbox, CreateContainer +
StartContainer and StopPodSandbox of a probe pod added to them, and
ListPodSandbox, ListContainers, ListContainerStats, PodSandboxStatus and
ExecSync against them. A good runtime stays flat from 1 to 110 pods
(report.py plots latency against the pod count). So that a runtime is not
charged with what the machine itself loses as pods are added (every new
mount namespace copies the host's mount table, which each pod lengthens),
the floors are measured at each count too, beside the runtime's pods:
``runc create`` + ``runc start`` of the floor's busybox bundle, ``runc
exec`` of true into a running container of it, ``runc kill`` + ``runc
delete`` of one, a pod's network made and removed by hand
(benchmarks/pod_network_floor.py), and the runtime's own ListPodSandbox and
ListContainers replies served by the bare grpc.aio server
(benchmarks/grpc_floor.py). At 110 pods: the daemon's RSS and CPU while idle,
its CPU under kubelet's 1 s poll of ListPodSandbox + ListContainers +
ListContainerStats, and a restart: the time from starting
the daemon again to Version answering and to both lists being complete.

A smoke run (tiny counts) stops at 1 to 4 pods and shortens the CPU windows.
"""

import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import grpc
import psutil

from benchmarks import oci
from benchmarks.containerd import delete_oci_containers
from benchmarks.core import CriTarget, Params, Row, RowSamples, cri_rows_workload
from benchmarks.cri_calls import (
    CONTAINER_RPCS,
    PARALLEL,
    RPC_TIMEOUT,
    create_container,
    delete_pod,
    ensure_busybox,
    pod_config,
    remove_pod,
    run_pod,
    start_container,
    stop_pod,
)
from benchmarks.grpc_floor import floor_server
from benchmarks.pod_network_floor import NetworkFloor
from benchmarks.workloads import helper_processes, rss_samples, timed
from cri.api.v1 import api_pb2 as pb
from cri.api.v1 import api_pb2_grpc

LEVELS = (1, 20, 55, 110)
SMOKE_COUNT = 5  # below this many samples the run is a smoke test
POLL_PERIOD = 1.0  # kubelet's relist (PLEG) and stats period, roughly
CPU_WINDOW = 2.0  # seconds per idle CPU sample
CPU_SAMPLES = 5
RESTART_TIMEOUT = 120.0
OPS = (
    ("run", "RunPodSandbox"),
    ("create_start", "CreateContainer + StartContainer"),
    ("stop", "StopPodSandbox"),
    ("list_pods", "ListPodSandbox"),
    ("list_containers", "ListContainers"),
    ("list_stats", "ListContainerStats"),
    ("pod_status", "PodSandboxStatus"),
    ("exec", "ExecSync of true"),
    ("floor_create_start", "floor: `runc create` + `runc start` beside the pods"),
    ("floor_exec", "floor: `runc exec` of true beside the pods"),
    ("floor_stop", "floor: `runc kill` (KILL) + its exit + `runc delete` beside the pods"),
    ("floor_list_pods", "floor: ListPodSandbox of this runtime's own reply from a bare grpc.aio server"),
    ("floor_list_containers", "floor: ListContainers of this runtime's own reply from a bare grpc.aio server"),
    ("floor_network_add", "floor: `ip netns add` + CNI ADD (loopback, bridge, portmap) beside the pods"),
    ("floor_network_del", "floor: CNI DEL + `ip netns delete` beside the pods"),
)
FULL = LEVELS[-1]
ROWS = (
    *(Row(f"{op}_{n}", f"node, {n} pod{'s' if n > 1 else ''}: {title}") for op, title in OPS for n in LEVELS),
    Row("rss", f"node, {FULL} pods: daemon RSS, idle", "bytes"),
    Row("cpu_idle", f"node, {FULL} pods: daemon CPU, idle", "%"),
    Row("cpu_poll", f"node, {FULL} pods: daemon CPU under a 1 s poll of the three lists", "%"),
    Row("cpu_poll_all", f"node, {FULL} pods: CPU of daemon + shims/monitors under that poll", "%"),
    Row("restart_version", f"node, {FULL} pods: daemon restart until Version answers"),
    Row("restart_lists", f"node, {FULL} pods: daemon restart until both lists are complete"),
)
NODE_RPCS = (*CONTAINER_RPCS, "ListPodSandbox", "ListContainers", "ListContainerStats", "PodSandboxStatus", "ExecSync")


def _pod_with_sleeper(t: CriTarget, p: Params, busybox: str, name: str) -> tuple[str, str]:
    config = pod_config(t, p, name)
    pod_id = run_pod(t, config)
    cid = create_container(t, pod_id, config, busybox, "sleeper")
    start_container(t, cid)
    return pod_id, cid


def _probe(t: CriTarget, p: Params, busybox: str, name: str, out: RowSamples, n: int) -> None:
    """One more pod beside the ``n`` running: its run, create+start and stop timed, then removed."""
    config = pod_config(t, p, name)
    t0 = time.perf_counter()
    pod_id = run_pod(t, config)
    t1 = time.perf_counter()
    try:
        start_container(t, create_container(t, pod_id, config, busybox, "probe"))
        t2 = time.perf_counter()
        stop_pod(t, pod_id)
        t3 = time.perf_counter()
    finally:
        delete_pod(t, pod_id)
    for op, seconds in (("run", t1 - t0), ("create_start", t2 - t1), ("stop", t3 - t2)):
        _append(out, f"{op}_{n}", seconds)


class _Floor:
    """The OCI runtime alone beside the pods: its bundles and root in the workload's dir."""

    def __init__(self, p: Params) -> None:
        self.root = p.workdir / "floor-root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.bundle = oci.make_bundle(p.workdir / "floor-true")
        self.sleeper = oci.make_bundle(p.workdir / "floor-sleeper", ("/bin/busybox", "sleep", "3600"))
        self.p = p
        self.network = NetworkFloor(p.workdir)

    def measure(self, t: CriTarget, out: RowSamples, n: int, probes: int, warmup: int) -> None:
        tag = f"{self.p.round}-{n}-{uuid.uuid4().hex[:8]}"
        self.network.fill(n)
        for i in range(probes):
            _append(
                out, f"floor_create_start_{n}", oci.create_start_once(oci.RUNC, self.root, self.bundle, f"cs-{tag}-{i}")
            )
            _append(out, f"floor_stop_{n}", oci.kill_delete_once(oci.RUNC, self.root, self.sleeper, f"st-{tag}-{i}"))
            netns = f"flr-{tag}-{i}"
            _append(out, f"floor_network_add_{n}", self.network.add(netns))
            _append(out, f"floor_network_del_{n}", self.network.delete(netns))
        out[f"floor_exec_{n}"] = oci.exec_samples(oci.RUNC, self.root, self.sleeper, f"exec-{tag}", self.p.count)
        for key, method, listing in (
            ("floor_list_pods", "ListPodSandbox", pb.ListPodSandboxRequest()),
            ("floor_list_containers", "ListContainers", pb.ListContainersRequest()),
        ):  # the bare server answers either with the reply it was given
            reply = getattr(t.client.runtime, method)(listing, timeout=RPC_TIMEOUT).SerializeToString()
            with floor_server(self.p.workdir, reply) as (client, _):
                out[f"{key}_{n}"] = timed(partial(getattr(client.runtime, method), listing), self.p.count, warmup)

    def clean(self) -> None:
        delete_oci_containers(oci.RUNC, self.root)  # what an interrupted measurement left
        self.network.clean()


def _append(out: RowSamples, key: str, value: float) -> None:
    samples = out.setdefault(key, [])
    assert isinstance(samples, list)
    samples.append(value)


def _check(what: str, got: int, want: int, t: CriTarget) -> None:
    if got < want:
        raise RuntimeError(f"{t.name}: {what} lists {got}, {want} are running")


def _lists(t: CriTarget, want: int) -> dict[str, Callable[[], None]]:
    rt = t.client.runtime

    def pods() -> None:
        _check("ListPodSandbox", len(rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT).items), want, t)

    def containers() -> None:
        got = rt.ListContainers(pb.ListContainersRequest(), timeout=RPC_TIMEOUT).containers
        _check("ListContainers", len(got), want, t)

    def stats() -> None:
        got = rt.ListContainerStats(pb.ListContainerStatsRequest(), timeout=RPC_TIMEOUT).stats
        _check("ListContainerStats", len(got), want, t)

    return {"list_pods": pods, "list_containers": containers, "list_stats": stats}


def _reads(t: CriTarget, p: Params, running: list[tuple[str, str]], out: RowSamples, real: bool) -> None:
    n = len(running)
    warmup = 3 if real else 0
    for key, call in _lists(t, n).items():
        out[f"{key}_{n}"] = timed(call, p.count, warmup)

    def status() -> None:
        req = pb.PodSandboxStatusRequest(pod_sandbox_id=random.choice(running)[0])
        t.client.runtime.PodSandboxStatus(req, timeout=RPC_TIMEOUT)

    def exec_true() -> None:
        req = pb.ExecSyncRequest(container_id=random.choice(running)[1], cmd=["true"], timeout=30)
        resp = t.client.runtime.ExecSync(req, timeout=RPC_TIMEOUT)
        if resp.exit_code != 0:
            raise RuntimeError(f"{t.name}: ExecSync true exited {resp.exit_code}: {resp.stderr!r}")

    out[f"pod_status_{n}"] = timed(status, p.count, warmup)
    out[f"exec_{n}"] = timed(exec_true, p.count, warmup)


def _cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out[proc.pid] = times.user + times.system
    return out


def _cpu_percent(before: dict[int, float], after: dict[int, float], seconds: float, pids: set[int] | None) -> float:
    """CPU% of the processes in both samples (``pids``: only those)."""
    used = sum(after[pid] - before[pid] for pid in after if pid in before and (pids is None or pid in pids))
    return 100 * used / seconds


def _cpu(t: CriTarget, windows: int, seconds: float, poll: dict[str, Callable[[], None]] | None) -> RowSamples:
    """CPU% per window of the daemon and of daemon + helpers; with ``poll``, its calls are made
    at the start of every window (kubelet's relist and stats loop)."""
    procs = [psutil.Process(t.pid), *helper_processes(t)]
    daemon: list[float] = []
    everyone: list[float] = []
    for _ in range(windows):
        before, t0 = _cpu_seconds(procs), time.perf_counter()
        for call in (poll or {}).values():
            call()
        time.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
        after, elapsed = _cpu_seconds(procs), time.perf_counter() - t0
        daemon.append(_cpu_percent(before, after, elapsed, {t.pid}))
        everyone.append(_cpu_percent(before, after, elapsed, None))
    return {"daemon": daemon, "all": everyone}


def _fast_channel(socket: str) -> grpc.Channel:
    """A channel that retries a refused connection every 10 ms, not after a 1 s backoff."""
    return grpc.insecure_channel(
        f"unix://{socket}",
        options=[
            ("grpc.initial_reconnect_backoff_ms", 10),
            ("grpc.min_reconnect_backoff_ms", 10),
            ("grpc.max_reconnect_backoff_ms", 50),
        ],
    )


def _restart(t: CriTarget, want: int) -> RowSamples:
    """Restart the daemon; seconds from its start to Version answering and to both lists being complete."""
    if t.restart is None:
        raise RuntimeError(f"{t.name} cannot be restarted by the harness")
    started = t.restart()
    deadline = started + RESTART_TIMEOUT
    version = lists = 0.0
    with _fast_channel(t.socket) as channel:
        rt = api_pb2_grpc.RuntimeServiceStub(channel)
        while not lists:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{t.name}: not answering with all {want} pods {RESTART_TIMEOUT:g}s after a restart")
            try:
                rt.Version(pb.VersionRequest(), timeout=1)
                version = version or time.perf_counter()
                pods = rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=5).items
                running = [
                    c
                    for c in rt.ListContainers(pb.ListContainersRequest(), timeout=5).containers
                    if c.state == pb.CONTAINER_RUNNING
                ]
                if sum(s.state == pb.SANDBOX_READY for s in pods) >= want and len(running) >= want:
                    lists = time.perf_counter()
            except grpc.RpcError:
                pass  # not listening, or still recovering (crid answers UNAVAILABLE until it has)
            if not lists:
                time.sleep(0.005)
    return {"restart_version": [version - started], "restart_lists": [lists - started]}


@cri_rows_workload("node", ROWS, count=20, runs=2, rpcs=NODE_RPCS, needs_images=True)
def node(t: CriTarget, p: Params) -> RowSamples:
    busybox = ensure_busybox(t, p)
    real = p.count >= SMOKE_COUNT
    levels = LEVELS if real else tuple(range(1, len(LEVELS) + 1))
    probes = max(1, p.count // 4)
    running: list[tuple[str, str]] = []
    out: RowSamples = {}
    floor = _Floor(p)
    try:
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="bench-node") as pool:
            for level, n in zip(LEVELS, levels, strict=True):
                names = [f"node-{i}" for i in range(len(running), n)]
                running += pool.map(lambda name: _pod_with_sleeper(t, p, busybox, name), names)
                for i in range(probes):
                    _probe(t, p, busybox, f"probe-{n}-{i}", out, n)
                _reads(t, p, running, out, real)
                floor.measure(t, out, n, probes, 3 if real else 0)
                if level != n:  # smoke: the rows keep their names
                    for op, _ in OPS:
                        out[f"{op}_{level}"] = out.pop(f"{op}_{n}")
        full = len(running)
        out["rss"] = rss_samples(t.pid, p.count)
        windows, seconds = (CPU_SAMPLES, CPU_WINDOW) if real else (2, 0.2)
        idle = _cpu(t, windows, seconds, None)
        out["cpu_idle"] = idle["daemon"]
        polled = _cpu(t, windows * 2, POLL_PERIOD if real else 0.2, _lists(t, full))
        out["cpu_poll"], out["cpu_poll_all"] = polled["daemon"], polled["all"]
        out.update(_restart(t, full))
        return out
    finally:
        floor.clean()
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="bench-node") as pool:
            list(pool.map(lambda pc: remove_pod(t, pc[0]), running))
