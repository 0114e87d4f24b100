"""The workloads, registered by name (``python -m benchmarks --list`` shows them).

Latency samples are in seconds, memory in bytes, throughput in MB/s (10^6
bytes, compressed, per second). A workload leaves nothing behind (the harness
also removes any pod or container left after each round). Those that need
pods, containers or images declare the RPCs they use: a runtime that answers
one of them UNIMPLEMENTED is reported as not supported, with the reason.

Pods are configured as kubelet configures an ordinary pod: their own network,
IPC and UTS namespaces, a PID namespace per container, a cgroup parent of
their own under the run's cgroup, a log directory. Containers run the busybox
image's ``sleep 3600`` and are stopped with a timeout of 0, as kubelet does
when a pod is deleted with no grace period.
"""

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import psutil

from benchmarks import oci, pull_floor
from benchmarks.core import (
    NEEDS_IMAGES,
    CriTarget,
    NotSupported,
    OciTarget,
    Params,
    PushedImage,
    Row,
    RowSamples,
    TestImages,
    cri_rows_workload,
    cri_workload,
    oci_workload,
    probe,
)
from cri.api.v1 import api_pb2 as pb
from cri.images.layer_process import ZYGOTE_IDLE_SECONDS
from cri.runtime.spec.build import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS

WARMUP = 10  # untimed calls before the timed ones of a latency workload
RSS_INTERVAL = 0.02  # seconds between two RSS samples
LIST_INTERVAL = 0.01  # seconds between two rounds of List calls during a pull
PARALLEL = 10  # pods at a time in the parallel pod workload
RPC_TIMEOUT = 120.0  # seconds: any one pod or container RPC
PULL_TIMEOUT = 900.0
COLD_TIMEOUT = 120.0  # seconds for a removed image's blobs and snapshots to be garbage collected
MB = 1_000_000

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


# --- pods ------------------------------------------------------------------------

POD_RPCS = ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox")
CONTAINER_RPCS = (*POD_RPCS, "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer")


def ensure_pause(t: CriTarget, p: Params) -> None:
    """containerd runs a pause container per pod (its sandbox_image, pulled at the first
    RunPodSandbox if absent): pull it before timing anything. crid needs no pause image."""
    if t.name != "crid":
        pull(t, images_of(p).pause.ref)


def pod_config(t: CriTarget, p: Params, name: str) -> pb.PodSandboxConfig:
    uid = uuid.uuid4().hex
    logs = p.workdir / "logs" / uid
    logs.mkdir(parents=True, exist_ok=True)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="crid-bench"),
        hostname=name,
        log_directory=str(logs),
        labels={"app": "crid-bench"},
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=f"{t.cgroup_parent}/pod{uid}",
            # what kubelet sends for a pod without hostNetwork or shareProcessNamespace
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD)
            ),
        ),
    )


def run_pod(t: CriTarget, config: pb.PodSandboxConfig) -> str:
    req = pb.RunPodSandboxRequest(config=config)
    return str(t.client.runtime.RunPodSandbox(req, timeout=RPC_TIMEOUT).pod_sandbox_id)


def stop_pod(t: CriTarget, pod_id: str) -> None:
    t.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)


def delete_pod(t: CriTarget, pod_id: str) -> None:
    t.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)


def remove_pod(t: CriTarget, pod_id: str) -> None:
    stop_pod(t, pod_id)
    delete_pod(t, pod_id)


@contextmanager
def pod(t: CriTarget, p: Params, name: str = "bench") -> Iterator[tuple[str, pb.PodSandboxConfig]]:
    config = pod_config(t, p, name)
    pod_id = run_pod(t, config)
    try:
        yield pod_id, config
    finally:
        remove_pod(t, pod_id)


def warm_up_pods(t: CriTarget, p: Params) -> None:
    """One untimed pod before the first round: the bridge is created, plugins and binaries are in
    the page cache."""
    ensure_pause(t, p)
    if p.round == 0:
        remove_pod(t, run_pod(t, pod_config(t, p, "warmup")))


def _clock(out: list[float], fn: Callable[[CriTarget, A], R], t: CriTarget, arg: A) -> R:
    """``fn(t, arg)``, its duration appended to ``out``."""
    t0 = time.perf_counter()
    result = fn(t, arg)
    out.append(time.perf_counter() - t0)
    return result


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
        pod_id = _clock(run, run_pod, t, config)
        _clock(stop, stop_pod, t, pod_id)
        _clock(remove, delete_pod, t, pod_id)
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
            pod_ids = list(pool.map(lambda c: _clock(run, run_pod, t, c), configs))
            list(pool.map(lambda i: _clock(stop, stop_pod, t, i), pod_ids))
            list(pool.map(lambda i: _clock(remove, delete_pod, t, i), pod_ids))
    return {"run": run, "stop": stop, "remove": remove}


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


# --- images ------------------------------------------------------------------

IMAGE_RPCS = ("PullImage", "RemoveImage", "ImageStatus")


def images_of(p: Params) -> TestImages:
    if p.images is None:
        raise NotSupported(NEEDS_IMAGES)
    return p.images


def pull(t: CriTarget, image: str) -> None:
    t.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=PULL_TIMEOUT)


def remove_image(t: CriTarget, image: str) -> None:
    t.client.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)), timeout=RPC_TIMEOUT)


def has_image(t: CriTarget, image: str) -> bool:
    req = pb.ImageStatusRequest(image=pb.ImageSpec(image=image))
    return bool(t.client.image.ImageStatus(req, timeout=RPC_TIMEOUT).HasField("image"))


def snapshot_dirs(t: CriTarget) -> set[str]:
    """The numbered snapshot directories of the runtime's snapshotter (unpacked layers)."""
    try:
        return {n for n in os.listdir(t.snapshots_dir) if n.isdigit()}
    except FileNotFoundError:
        return set()


def make_cold(t: CriTarget, image: PushedImage, snapshots: set[str] | None = None) -> None:
    """RemoveImage, then wait until the runtime's garbage collection has deleted the image's blobs
    from its content store and its unpacked layers (``snapshots``: their dirs, when known; else
    until the snapshot dirs stop changing): the next pull of it is cold."""
    remove_image(t, image.ref)
    if has_image(t, image.ref):
        raise RuntimeError(f"{t.name} still lists {image.ref} after RemoveImage")
    deadline = time.monotonic() + COLD_TIMEOUT
    last: set[str] | None = None
    stable = 0
    while True:
        blobs = [d for d in image.blobs if (t.content_dir / d.removeprefix("sha256:")).exists()]
        dirs = snapshot_dirs(t)
        if snapshots is not None:
            done = not (dirs & snapshots)
        else:
            stable = stable + 1 if dirs == last else 0
            last = dirs
            done = stable >= 3
        if not blobs and done:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{t.name} kept {len(blobs)} blob(s) of {image.ref} ({t.content_dir}) and its snapshots "
                f"{sorted(dirs & snapshots) if snapshots else '?'} for {COLD_TIMEOUT:g}s after RemoveImage"
            )
        time.sleep(0.05)


def timed_cold_pulls(t: CriTarget, image: PushedImage, count: int) -> tuple[list[float], list[float]]:
    """``count`` pulls of ``image``, each from a cold store; returns (MB/s, seconds) per pull.

    Each starts from a clean page cache state, as the floor's passes do (pull_floor.py): what the
    pull before it, the other runtime's or the removal left dirty is written out first, untimed."""
    make_cold(t, image)
    mbps, seconds = [], []
    for _ in range(count):
        before = snapshot_dirs(t)
        os.sync()
        t0 = time.perf_counter()
        pull(t, image.ref)
        elapsed = time.perf_counter() - t0
        if not has_image(t, image.ref):
            raise RuntimeError(f"{t.name} does not list {image.ref} after pulling it")
        mbps.append(image.compressed_bytes / MB / elapsed)
        seconds.append(elapsed)
        make_cold(t, image, snapshot_dirs(t) - before)
    return mbps, seconds


@cri_rows_workload(
    "image_pull_big",
    (
        Row("mbps", "cold pull, big image (large incompressible files): MB/s", "MB/s"),
        Row("seconds", "cold pull, big image: seconds"),
    ),
    count=1,
    runs=5,
    rpcs=IMAGE_RPCS,
    needs_images=True,
)
def image_pull_big(t: CriTarget, p: Params) -> RowSamples:
    mbps, seconds = timed_cold_pulls(t, images_of(p).big, p.count)
    return {"mbps": mbps, "seconds": seconds}


@cri_rows_workload(
    "image_pull_small",
    (
        Row("mbps", "cold pull, small-files image: MB/s", "MB/s"),
        Row("seconds", "cold pull, small-files image: seconds"),
    ),
    count=1,
    runs=3,
    rpcs=IMAGE_RPCS,
    needs_images=True,
)
def image_pull_small(t: CriTarget, p: Params) -> RowSamples:
    mbps, seconds = timed_cold_pulls(t, images_of(p).small, p.count)
    return {"mbps": mbps, "seconds": seconds}


def _sample_lists(
    calls: dict[str, Callable[[], object]],
    out: dict[str, list[float]],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    """Call each of ``calls`` in turn, timing each into ``out``, until ``stop`` is set."""
    try:
        while not stop.is_set():
            for key, call in calls.items():
                t0 = time.perf_counter()
                call()
                out[key].append(time.perf_counter() - t0)
            stop.wait(LIST_INTERVAL)
    except BaseException as exc:
        errors.append(exc)


@cri_rows_workload(
    "list_during_pull",
    (
        Row("images", "ListImages during a cold pull of the big image"),
        Row("containers", "ListContainers during a cold pull of the big image"),
        Row(
            "images_floor", "floor: ListImages of the idle daemon while the machine floor's pull of the big image runs"
        ),
    ),
    count=1,
    runs=2,
    rpcs=(*IMAGE_RPCS, "ListImages"),
    needs_images=True,
)
def list_during_pull(t: CriTarget, p: Params) -> RowSamples:
    """Pull the big image (cold) while a second thread calls ListImages and ListContainers in a loop,
    10 ms apart: a pull must not stall the runtime's reads. The floor: the same ListImages loop while
    the daemon does nothing and the pull_floor pipeline (other processes) takes the machine's CPU and disk."""
    image = images_of(p).big
    out: dict[str, list[float]] = {"images": []}
    calls: dict[str, Callable[[], object]] = {
        "images": lambda: t.client.image.ListImages(pb.ListImagesRequest(), timeout=RPC_TIMEOUT)
    }
    missing = probe(t.client, "ListContainers")
    if missing is None:
        out["containers"] = []
        calls["containers"] = lambda: t.client.runtime.ListContainers(pb.ListContainersRequest(), timeout=RPC_TIMEOUT)
    make_cold(t, image)
    for _ in range(p.count):
        stop = threading.Event()
        errors: list[BaseException] = []
        sampler = threading.Thread(target=_sample_lists, args=(calls, out, stop, errors), name="bench-list-sampler")
        before = snapshot_dirs(t)
        os.sync()  # as before each timed pull
        sampler.start()
        try:
            pull(t, image.ref)
        finally:
            stop.set()
            sampler.join()
        if errors:
            raise errors[0]
        make_cold(t, image, snapshot_dirs(t) - before)
    floor: dict[str, list[float]] = {"images": []}
    for _ in range(p.count):
        stop = threading.Event()
        errors = []
        sampler = threading.Thread(target=_sample_lists, args=({"images": calls["images"]}, floor, stop, errors))
        os.sync()
        sampler.start()
        try:
            pull_floor.floor_seconds(image, p.workdir)
        finally:
            stop.set()
            sampler.join()
        if errors:
            raise errors[0]
    rows: RowSamples = dict(out)
    rows["images_floor"] = floor["images"]
    if missing is not None:
        rows["containers"] = NotSupported(missing)
    return rows


# --- containers --------------------------------------------------------------------

SLEEP = ("sleep", "3600")


def ensure_busybox(t: CriTarget, p: Params) -> str:
    ensure_pause(t, p)
    busybox = images_of(p).busybox.ref
    pull(t, busybox)
    return busybox


def create_container(
    t: CriTarget, pod_id: str, pod_cfg: pb.PodSandboxConfig, image: str, name: str, args: tuple[str, ...] = SLEEP
) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image),
        command=list(args),
        log_path=f"{name}.log",  # relative to the pod's log_directory
        labels={"app": "crid-bench"},
        # what kubelet sends for a container of such a pod: the pod's namespaces, and its securitycontext
        # package's paths for the Default procMount (crid's defaults too; containerd masks nothing without)
        linux=pb.LinuxContainerConfig(
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD),
                masked_paths=list(DEFAULT_MASKED_PATHS),
                readonly_paths=list(DEFAULT_READONLY_PATHS),
            )
        ),
    )
    req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_cfg)
    return str(t.client.runtime.CreateContainer(req, timeout=RPC_TIMEOUT).container_id)


def start_container(t: CriTarget, cid: str) -> None:
    t.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=RPC_TIMEOUT)


def running_containers(t: CriTarget, pod_id: str) -> int:
    listed = t.client.runtime.ListContainers(pb.ListContainersRequest(), timeout=RPC_TIMEOUT).containers
    return sum(1 for c in listed if c.pod_sandbox_id == pod_id and c.state == pb.CONTAINER_RUNNING)


def stop_container(t: CriTarget, cid: str) -> None:
    t.client.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=RPC_TIMEOUT)


def delete_container(t: CriTarget, cid: str) -> None:
    t.client.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=RPC_TIMEOUT)


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
            _clock(stop, stop_container, t, cid)
            _clock(remove, delete_container, t, cid)
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


@contextmanager
def hundred_containers(t: CriTarget, p: Params) -> Iterator[None]:
    """100 busybox containers (created, not started) in one pod, removed afterwards."""
    busybox = ensure_busybox(t, p)
    with pod(t, p) as (pod_id, pod_cfg):
        cids = [create_container(t, pod_id, pod_cfg, busybox, f"c{i}") for i in range(100)]
        listed = len(t.client.runtime.ListContainers(pb.ListContainersRequest(), timeout=RPC_TIMEOUT).containers)
        if listed < len(cids):
            raise RuntimeError(f"{t.name} lists {listed} containers, {len(cids)} were created")
        try:
            yield
        finally:
            for cid in cids:
                t.client.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=RPC_TIMEOUT)


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
