"""The workloads, registered by name (``python -m benchmarks --list`` shows them).

Latency samples are in seconds, memory in bytes, throughput in MB/s. A
workload leaves nothing behind (the harness also removes any pod left after
each round). Those that need pods, containers or images declare the RPCs they
use and the test images: until a runtime answers those RPCs and the images
are in a local registry, they are reported as not supported with the reason.
"""

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psutil

from benchmarks import oci
from benchmarks.core import (
    NEEDS_IMAGES,
    CriTarget,
    NotSupported,
    OciTarget,
    Params,
    TestImages,
    cri_workload,
    oci_workload,
)
from cri.api.v1 import api_pb2 as pb

WARMUP = 10  # untimed calls before the timed ones of a latency workload
RSS_INTERVAL = 0.02  # seconds between two RSS samples
MB = 1_000_000


def timed(call: Callable[[], object], count: int, warmup: int = WARMUP) -> list[float]:
    for _ in range(min(warmup, count)):
        call()
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    return samples


def rss_samples(pid: int, count: int, interval: float = RSS_INTERVAL) -> list[float]:
    proc = psutil.Process(pid)
    samples = []
    for i in range(count):
        if i:
            time.sleep(interval)
        samples.append(float(proc.memory_info().rss))
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


# --- pods and containers (supported once the RPCs and the test images exist) --

POD_RPCS = ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox")
CONTAINER_RPCS = (*POD_RPCS, "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer")


def images_of(p: Params) -> TestImages:
    if p.images is None:
        raise NotSupported(NEEDS_IMAGES)
    return p.images


def pull(t: CriTarget, image: str) -> None:
    t.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)))


def pod_config(t: CriTarget, p: Params, name: str) -> pb.PodSandboxConfig:
    uid = uuid.uuid4().hex
    logs = p.workdir / "logs" / uid
    logs.mkdir(parents=True, exist_ok=True)
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="crid-bench"),
        hostname=name,
        log_directory=str(logs),
        linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{t.cgroup_parent}/pod{uid}"),
    )


def run_pod(t: CriTarget, config: pb.PodSandboxConfig) -> str:
    return str(t.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config)).pod_sandbox_id)


def remove_pod(t: CriTarget, pod_id: str) -> None:
    t.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    t.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


@contextmanager
def pod(t: CriTarget, p: Params, name: str = "bench") -> Iterator[tuple[str, pb.PodSandboxConfig]]:
    config = pod_config(t, p, name)
    pod_id = run_pod(t, config)
    try:
        yield pod_id, config
    finally:
        remove_pod(t, pod_id)


def create_container(
    t: CriTarget, pod_id: str, pod_cfg: pb.PodSandboxConfig, image: str, name: str, args: tuple[str, ...]
) -> str:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=image),
        command=list(args),
        log_path=f"{name}.log",
    )
    req = pb.CreateContainerRequest(pod_sandbox_id=pod_id, config=config, sandbox_config=pod_cfg)
    return str(t.client.runtime.CreateContainer(req).container_id)


def start_container(t: CriTarget, cid: str) -> None:
    t.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))


def remove_container(t: CriTarget, cid: str) -> None:
    t.client.runtime.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
    t.client.runtime.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


SLEEP = ("/bin/sleep", "3600")


@cri_workload("pod_lifecycle", "pod sandbox run+stop+remove", count=10, rpcs=POD_RPCS, needs_images=True)
def pod_lifecycle(t: CriTarget, p: Params) -> list[float]:
    pull(t, images_of(p).pause)
    samples = []
    for i in range(p.count):
        config = pod_config(t, p, f"pod-{i}")
        t0 = time.perf_counter()
        remove_pod(t, run_pod(t, config))
        samples.append(time.perf_counter() - t0)
    return samples


@cri_workload("container_create_start", "container create+start", count=10, rpcs=CONTAINER_RPCS, needs_images=True)
def container_create_start(t: CriTarget, p: Params) -> list[float]:
    busybox = images_of(p).busybox
    pull(t, busybox)
    samples = []
    with pod(t, p) as (pod_id, pod_cfg):
        for i in range(p.count):
            t0 = time.perf_counter()
            cid = create_container(t, pod_id, pod_cfg, busybox, f"c{i}", SLEEP)
            start_container(t, cid)
            samples.append(time.perf_counter() - t0)
    return samples


@cri_workload(
    "container_lifecycle",
    "container create+start+stop+remove",
    count=10,
    rpcs=CONTAINER_RPCS,
    needs_images=True,
)
def container_lifecycle(t: CriTarget, p: Params) -> list[float]:
    busybox = images_of(p).busybox
    pull(t, busybox)
    samples = []
    with pod(t, p) as (pod_id, pod_cfg):
        for i in range(p.count):
            t0 = time.perf_counter()
            cid = create_container(t, pod_id, pod_cfg, busybox, f"c{i}", SLEEP)
            start_container(t, cid)
            remove_container(t, cid)
            samples.append(time.perf_counter() - t0)
    return samples


@cri_workload(
    "pod_container_start",
    "pod + container start from scratch",
    count=5,
    rpcs=CONTAINER_RPCS,
    needs_images=True,
)
def pod_container_start(t: CriTarget, p: Params) -> list[float]:
    images = images_of(p)
    pull(t, images.pause)
    pull(t, images.busybox)
    samples = []
    for i in range(p.count):
        config = pod_config(t, p, f"pod-{i}")
        t0 = time.perf_counter()
        pod_id = run_pod(t, config)
        start_container(t, create_container(t, pod_id, config, images.busybox, "c", SLEEP))
        samples.append(time.perf_counter() - t0)
        remove_pod(t, pod_id)
    return samples


@cri_workload(
    "list_containers_100",
    "ListContainers, 100 containers",
    count=200,
    rpcs=(*CONTAINER_RPCS, "ListContainers"),
    needs_images=True,
)
def list_containers_100(t: CriTarget, p: Params) -> list[float]:
    busybox = images_of(p).busybox
    pull(t, busybox)
    with pod(t, p) as (pod_id, pod_cfg):
        for i in range(100):  # created, not started: the list is what is measured
            create_container(t, pod_id, pod_cfg, busybox, f"c{i}", SLEEP)
        req = pb.ListContainersRequest()
        return timed(lambda: t.client.runtime.ListContainers(req), p.count)


def remove_image(t: CriTarget, image: str) -> None:
    t.client.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=image)))


def image_size(t: CriTarget, image: str) -> int:
    return int(t.client.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image))).image.size)


@cri_workload(
    "image_pull_cold",
    "cold image pull",
    unit="MB/s",
    count=3,
    rpcs=("PullImage", "RemoveImage", "ImageStatus"),
    needs_images=True,
)
def image_pull_cold(t: CriTarget, p: Params) -> list[float]:
    image = images_of(p).large
    samples = []
    for _ in range(p.count):
        remove_image(t, image)  # absent: RemoveImage is idempotent
        t0 = time.perf_counter()
        pull(t, image)
        elapsed = time.perf_counter() - t0
        samples.append(image_size(t, image) / MB / elapsed)
    remove_image(t, image)
    return samples


def _pull_into(t: CriTarget, image: str, errors: list[BaseException]) -> None:
    try:
        pull(t, image)
    except BaseException as exc:
        errors.append(exc)


@cri_workload(
    "list_during_pull",
    "ListImages/ListContainers during a pull",
    count=1,
    rpcs=("PullImage", "RemoveImage", "ListImages", "ListContainers"),
    needs_images=True,
)
def list_during_pull(t: CriTarget, p: Params) -> list[float]:
    image = images_of(p).large
    samples: list[float] = []
    for _ in range(p.count):
        remove_image(t, image)
        errors: list[BaseException] = []
        puller = threading.Thread(target=_pull_into, args=(t, image, errors), name="bench-pull")
        puller.start()
        while puller.is_alive():
            t0 = time.perf_counter()
            t.client.image.ListImages(pb.ListImagesRequest())
            samples.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            t.client.runtime.ListContainers(pb.ListContainersRequest())
            samples.append(time.perf_counter() - t0)
        puller.join()
        if errors:
            raise errors[0]
    remove_image(t, image)
    return samples


@cri_workload("rss_20_pods", "daemon RSS, 20 pods", unit="bytes", count=5, rpcs=POD_RPCS, needs_images=True)
def rss_20_pods(t: CriTarget, p: Params) -> list[float]:
    pull(t, images_of(p).pause)
    pods = []
    try:
        for i in range(20):
            pods.append(run_pod(t, pod_config(t, p, f"pod-{i}")))
        return rss_samples(t.pid, p.count)
    finally:
        for pod_id in pods:
            remove_pod(t, pod_id)


MONITORS = {"conmon", "containerd-shim-runc-v2"}


@cri_workload("monitor_rss", "monitor RSS per container", unit="bytes", count=5, rpcs=CONTAINER_RPCS, needs_images=True)
def monitor_rss(t: CriTarget, p: Params) -> list[float]:
    """crid's conmon per container against containerd's shim (one per pod): 5 pods, 1 container each."""
    images = images_of(p)
    pull(t, images.pause)
    pull(t, images.busybox)
    pods = []
    try:
        for i in range(5):
            config = pod_config(t, p, f"pod-{i}")
            pod_id = run_pod(t, config)
            pods.append(pod_id)
            start_container(t, create_container(t, pod_id, config, images.busybox, "c", SLEEP))
        samples = []
        for _ in range(p.count):
            total = 0
            for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
                cmdline = " ".join(proc.info["cmdline"] or [])
                if proc.info["name"] in MONITORS and str(t.dir) in cmdline:
                    total += proc.info["memory_info"].rss
            samples.append(total / len(pods))
            time.sleep(RSS_INTERVAL)
        return samples
    finally:
        for pod_id in pods:
            remove_pod(t, pod_id)
