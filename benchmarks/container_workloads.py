"""The container workloads: create+start, the whole lifecycle, a pod and its container from
scratch, ListContainers with 100 containers, the monitors' memory, and the daemon's RSS at the end."""

import time

import psutil

from benchmarks.core import (
    CriTarget,
    Params,
    Row,
    RowSamples,
    cri_rows_workload,
    cri_workload,
)
from benchmarks.cri_calls import (
    CONTAINER_RPCS,
    RPC_TIMEOUT,
    create_container,
    delete_container,
    ensure_busybox,
    hundred_containers,
    pod,
    pod_config,
    remove_pod,
    run_pod,
    running_containers,
    start_container,
    stop_container,
)
from benchmarks.workloads import (
    RSS_INTERVAL,
    clock,
    helper_processes,
    pull_processes,
    rss_samples,
    timed,
)
from cri.api.v1 import api_pb2 as pb
from cri.images.layer_process import ZYGOTE_IDLE_SECONDS


@cri_workload(
    "container_create_start", "container create+start", count=10, runs=3, rpcs=CONTAINER_RPCS, needs_images=True
)
def container_create_start(t: CriTarget, p: Params) -> list[float]:
    """CreateContainer + StartContainer of ``count`` busybox containers in one pod (they keep running)."""
    busybox = ensure_busybox(t, p)
    samples = []
    with pod(t, p) as (pod_id, pod_cfg):
        for i in range(p.count):
            t0 = time.perf_counter()
            cid = create_container(t, pod_id, pod_cfg, busybox, f"c{i}")
            start_container(t, cid)
            samples.append(time.perf_counter() - t0)
        running = running_containers(t, pod_id)
        if running != p.count:
            raise RuntimeError(f"{t.name} has {running} running containers in the pod, {p.count} were started")
    return samples


@cri_rows_workload(
    "container_lifecycle",
    (
        Row("total", "container create+start+stop+remove"),
        Row("stop", "StopContainer (timeout 0) of a running container"),
        Row("remove", "RemoveContainer of a stopped container"),
    ),
    count=10,
    runs=3,
    rpcs=CONTAINER_RPCS,
    needs_images=True,
)
def container_lifecycle(t: CriTarget, p: Params) -> RowSamples:
    """Create, start, stop (timeout 0) and remove a busybox container, ``count`` times in one pod;
    the whole cycle timed, and its StopContainer and RemoveContainer on their own."""
    busybox = ensure_busybox(t, p)
    total: list[float] = []
    stop: list[float] = []
    remove: list[float] = []
    with pod(t, p) as (pod_id, pod_cfg):
        for i in range(p.count):
            t0 = time.perf_counter()
            cid = create_container(t, pod_id, pod_cfg, busybox, f"c{i}")
            start_container(t, cid)
            clock(stop, stop_container, t, cid)
            clock(remove, delete_container, t, cid)
            total.append(time.perf_counter() - t0)
    return {"total": total, "stop": stop, "remove": remove}


@cri_workload(
    "pod_container_start",
    "pod + container start from scratch",
    count=5,
    runs=3,
    rpcs=CONTAINER_RPCS,
    needs_images=True,
)
def pod_container_start(t: CriTarget, p: Params) -> list[float]:
    """RunPodSandbox + CreateContainer + StartContainer: what a new pod costs until its process runs."""
    busybox = ensure_busybox(t, p)
    samples = []
    for i in range(p.count):
        config = pod_config(t, p, f"pod-{p.round}-{i}")
        t0 = time.perf_counter()
        pod_id = run_pod(t, config)
        try:
            start_container(t, create_container(t, pod_id, config, busybox, "c"))
            samples.append(time.perf_counter() - t0)
        finally:
            remove_pod(t, pod_id)
    return samples


LIST_100_RPCS = (*CONTAINER_RPCS, "ListContainers")


@cri_workload(
    "list_containers_100",
    "ListContainers, 100 containers",
    count=200,
    runs=2,
    rpcs=LIST_100_RPCS,
    needs_images=True,
)
def list_containers_100(t: CriTarget, p: Params) -> list[float]:
    """ListContainers with 100 containers (created, not started) in one pod."""
    with hundred_containers(t, p):
        req = pb.ListContainersRequest()
        return timed(lambda: t.client.runtime.ListContainers(req, timeout=RPC_TIMEOUT), p.count)


MONITORS = {"conmon", "containerd-shim-runc-v2"}
PODS_FOR_MONITOR = 5


@cri_workload(
    "monitor_rss",
    "monitor RSS per container",
    unit="bytes",
    count=5,
    runs=2,
    rpcs=CONTAINER_RPCS,
    needs_images=True,
)
def monitor_rss(t: CriTarget, p: Params) -> list[float]:
    """crid's conmon per container against containerd's shim (one per pod): 5 pods, 1 container each."""
    busybox = ensure_busybox(t, p)
    pods = []
    try:
        for i in range(PODS_FOR_MONITOR):
            config = pod_config(t, p, f"pod-{i}")
            pod_id = run_pod(t, config)
            pods.append(pod_id)
            start_container(t, create_container(t, pod_id, config, busybox, "c"))
        samples = []
        for i in range(p.count):
            if i:
                time.sleep(RSS_INTERVAL)
            total = 0
            for proc in helper_processes(t):
                try:
                    if proc.name() in MONITORS:
                        total += proc.memory_info().rss
                except psutil.Error:
                    continue
            samples.append(total / len(pods))
        return samples
    finally:
        for pod_id in pods:
            remove_pod(t, pod_id)


@cri_workload("rss_end", "daemon RSS, idle, after all the workloads above", unit="bytes", count=10)
def rss_end(t: CriTarget, p: Params) -> list[float]:
    """What the daemon still holds once the pods, containers and pulls before it are gone: crid's
    pull zygote (about 36 MiB) leaves ZYGOTE_IDLE_SECONDS after the last pull; sampled after that."""
    deadline = time.monotonic() + ZYGOTE_IDLE_SECONDS + 30
    while pull_processes(t.pid) and time.monotonic() < deadline:
        time.sleep(1)
    return rss_samples(t.pid, p.count)
