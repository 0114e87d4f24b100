"""The basic workloads, registered by name (``python -m benchmarks --list`` shows them all):
CRI round trips, the daemon's memory, the OCI runtime alone, pods; and what the other
workload modules measure with (``timed``, ``clock``, ``rss_samples``, ``helper_processes``).

Latency samples are in seconds, memory in bytes, throughput in MB/s (10^6
bytes, compressed, per second). A workload leaves nothing behind (the harness
also removes any pod or container left after each round). Those that need
pods, containers or images declare the RPCs they use: a runtime that answers
one of them UNIMPLEMENTED is reported as not supported, with the reason.
How pods and containers are configured: ``cri_calls``.
"""

import contextlib
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import psutil

from benchmarks import oci
from benchmarks.core import (
    CriTarget,
    NotSupported,
    OciTarget,
    Params,
    Row,
    RowSamples,
    cri_rows_workload,
    cri_workload,
    oci_workload,
)
from benchmarks.cri_calls import (
    PARALLEL,
    POD_RPCS,
    delete_pod,
    ensure_pause,
    pod_config,
    remove_pod,
    run_pod,
    stop_pod,
    warm_up_pods,
)
from cri.api.v1 import api_pb2 as pb

WARMUP = 10  # untimed calls before the timed ones of a latency workload
RSS_INTERVAL = 0.02  # seconds between two RSS samples

A = TypeVar("A")
R = TypeVar("R")


def timed(call: Callable[[], object], count: int, warmup: int = WARMUP) -> list[float]:
    for _ in range(min(warmup, count)):
        call()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


PULL_PROCESS = "cri.images.layer_child"  # crid's pull zygote and its children: the daemon's own memory


def pull_processes(pid: int) -> list[psutil.Process]:
    """crid's pull processes under the daemon ``pid`` (none for containerd, which pulls in itself)."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        try:
            if any(PULL_PROCESS in arg for arg in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def rss_samples(pid: int, count: int, interval: float = RSS_INTERVAL) -> list[float]:
    """The daemon's RSS, with its pull processes' while they run."""
    proc = psutil.Process(pid)
    samples = []
    for i in range(count):
        if i:
            time.sleep(interval)
        rss = proc.memory_info().rss
        for helper in pull_processes(pid):
            with contextlib.suppress(psutil.Error):
                rss += helper.memory_info().rss
        samples.append(float(rss))
    return samples


# --- CRI round trips -------------------------------------------------------


@cri_workload("version", "CRI Version round trip", count=2000)
def version(t: CriTarget, p: Params) -> list[float]:
    req = pb.VersionRequest(version="0.1.0")
    return timed(lambda: t.client.runtime.Version(req), p.count)


@cri_workload("status", "Status", count=2000)
def status(t: CriTarget, p: Params) -> list[float]:
    req = pb.StatusRequest()
    return timed(lambda: t.client.runtime.Status(req), p.count)


@cri_workload("list_containers_0", "ListContainers, 0 containers", count=2000, rpcs=("ListContainers",))
def list_containers_0(t: CriTarget, p: Params) -> list[float]:
    req = pb.ListContainersRequest()
    present = len(t.client.runtime.ListContainers(req).containers)
    if present:
        raise NotSupported(f"{t.name} already has {present} containers")
    return timed(lambda: t.client.runtime.ListContainers(req), p.count)


@cri_workload("rss_idle", "daemon RSS, idle", unit="bytes", count=10)
def rss_idle(t: CriTarget, p: Params) -> list[float]:
    return rss_samples(t.pid, p.count)


# --- the floor: an OCI runtime alone ----------------------------------------


@oci_workload("floor_run", "floor: `{target} run` of busybox /bin/true", count=40)
def floor_run(t: OciTarget, p: Params) -> list[float]:
    samples: list[float] = []
    for i in range(p.count):
        cid = f"floor-{p.round}-{i}-{uuid.uuid4().hex[:8]}"
        t0 = time.perf_counter()
        try:
            oci.run_once(t.binary, t.root, t.bundle, cid)
        except RuntimeError as exc:
            if not samples and p.round == 0:  # it never ran here: crun 1.8 on hybrid cgroups
                raise NotSupported(str(exc)) from exc
            raise
        samples.append(time.perf_counter() - t0)
    return samples


@oci_workload("floor_create_start", "floor: `{target} create` + `{target} start` of busybox /bin/true", count=40)
def floor_create_start(t: OciTarget, p: Params) -> list[float]:
    samples: list[float] = []
    for i in range(p.count):
        cid = f"floor-cs-{p.round}-{i}-{uuid.uuid4().hex[:8]}"
        try:
            samples.append(oci.create_start_once(t.binary, t.root, t.bundle, cid))
        except RuntimeError as exc:
            if not samples and p.round == 0:  # it never ran here: crun 1.8 on hybrid cgroups
                raise NotSupported(str(exc)) from exc
            raise
    return samples


def clock(out: list[float], fn: Callable[[CriTarget, A], R], t: CriTarget, arg: A) -> R:
    """``fn(t, arg)``, its duration appended to ``out``."""
    t0 = time.perf_counter()
    result = fn(t, arg)
    out.append(time.perf_counter() - t0)
    return result


def helper_processes(t: CriTarget) -> list[psutil.Process]:
    """The runtime's processes other than the daemon: whatever has its dir on the command line
    (containerd's shims), and their descendants and the daemon's (pause, conmon, the containers)."""
    me = os.getpid()
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline: list[str] = proc.info["cmdline"] or []
        if proc.info["pid"] not in (me, t.pid) and any(str(t.dir) in arg for arg in cmdline):
            found[proc.pid] = proc
    roots = [psutil.Process(t.pid), *found.values()]
    for root in roots:
        try:
            for child in root.children(recursive=True):
                if child.pid not in (me, t.pid):
                    found[child.pid] = child
        except psutil.Error:
            continue
    pulls = {proc.pid for proc in pull_processes(t.pid)}  # counted with the daemon (rss_samples)
    return [proc for pid, proc in found.items() if pid not in pulls]


def helpers_memory(t: CriTarget) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over :func:`helper_processes`."""
    rss = pss = 0
    for proc in helper_processes(t):
        try:
            info = proc.memory_full_info()
        except psutil.Error:
            continue
        rss += info.rss
        pss += getattr(info, "pss", info.rss)
    return rss, pss


# --- pods ------------------------------------------------------------------------


def _pod_rows(mode: str) -> tuple[Row, Row, Row]:
    return (
        Row("run", f"RunPodSandbox, {mode}"),
        Row("stop", f"StopPodSandbox, {mode}"),
        Row("remove", f"RemovePodSandbox, {mode}"),
    )


@cri_rows_workload("pod_lifecycle", _pod_rows("one at a time"), count=10, runs=3, rpcs=POD_RPCS, needs_images=True)
def pod_lifecycle(t: CriTarget, p: Params) -> RowSamples:
    """``count`` pods one after the other, each run, stopped and removed; every RPC timed."""
    warm_up_pods(t, p)
    run: list[float] = []
    stop: list[float] = []
    remove: list[float] = []
    for i in range(p.count):
        config = pod_config(t, p, f"pod-{p.round}-{i}")
        pod_id = clock(run, run_pod, t, config)
        clock(stop, stop_pod, t, pod_id)
        clock(remove, delete_pod, t, pod_id)
    return {"run": run, "stop": stop, "remove": remove}


@cri_rows_workload(
    "pod_lifecycle_parallel",
    _pod_rows(f"{PARALLEL} at a time"),
    count=10,
    runs=3,
    rpcs=POD_RPCS,
    needs_images=True,
)
def pod_lifecycle_parallel(t: CriTarget, p: Params) -> RowSamples:
    """``count`` pods in batches of 10: the batch's RunPodSandbox calls at once, then its
    StopPodSandbox calls, then its RemovePodSandbox calls; every RPC timed on its own."""
    warm_up_pods(t, p)
    run: list[float] = []
    stop: list[float] = []
    remove: list[float] = []
    with ThreadPoolExecutor(PARALLEL, thread_name_prefix="bench-pod") as pool:
        for start in range(0, p.count, PARALLEL):
            configs = [pod_config(t, p, f"pod-{p.round}-{i}") for i in range(start, min(p.count, start + PARALLEL))]
            pod_ids = list(pool.map(lambda c: clock(run, run_pod, t, c), configs))
            list(pool.map(lambda i: clock(stop, stop_pod, t, i), pod_ids))
            list(pool.map(lambda i: clock(remove, delete_pod, t, i), pod_ids))
    return {"run": run, "stop": stop, "remove": remove}


PODS_FOR_RSS = 20


@cri_rows_workload(
    "rss_20_pods",
    (
        Row("daemon", f"daemon RSS, {PODS_FOR_RSS} ready pods", "bytes"),
        Row("per_pod_rss", "per-pod overhead: RSS of shims, pause and infra processes / pods", "bytes"),
        Row("per_pod_pss", "per-pod overhead: PSS of shims, pause and infra processes / pods", "bytes"),
    ),
    count=5,
    runs=2,
    rpcs=POD_RPCS,
    needs_images=True,
)
def rss_20_pods(t: CriTarget, p: Params) -> RowSamples:
    """20 ready pods (no containers); then the daemon's RSS, and what the runtime's other
    processes (containerd: a shim and a pause process per pod) hold, per pod."""
    ensure_pause(t, p)
    pods = []
    try:
        for i in range(PODS_FOR_RSS):
            pods.append(run_pod(t, pod_config(t, p, f"pod-{i}")))
        daemon: list[float] = []
        per_rss: list[float] = []
        per_pss: list[float] = []
        for i in range(p.count):
            if i:
                time.sleep(RSS_INTERVAL)
            daemon.append(float(psutil.Process(t.pid).memory_info().rss))
            rss, pss = helpers_memory(t)
            per_rss.append(rss / len(pods))
            per_pss.append(pss / len(pods))
        return {"daemon": daemon, "per_pod_rss": per_rss, "per_pod_pss": per_pss}
    finally:
        for pod_id in pods:
            remove_pod(t, pod_id)
