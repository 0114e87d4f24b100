"""The CRI calls the workloads are made of, with nothing timed and nothing registered.

Pods are configured as kubelet configures an ordinary pod: their own network,
IPC and UTS namespaces, a PID namespace per container, a cgroup parent of
their own under the run's cgroup, a log directory. Containers run the busybox
image's ``sleep 3600`` and are stopped with a timeout of 0, as kubelet does
when a pod is deleted with no grace period.
"""

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.core import NEEDS_IMAGES, CriTarget, NotSupported, Params, TestImages
from cri.api.v1 import api_pb2 as pb
from cri.runtime.spec.build import DEFAULT_MASKED_PATHS, DEFAULT_READONLY_PATHS

PARALLEL = 10  # pods at a time in the parallel workloads
RPC_TIMEOUT = 120.0  # seconds: any one pod or container RPC
PULL_TIMEOUT = 900.0

POD_RPCS = ("RunPodSandbox", "StopPodSandbox", "RemovePodSandbox")
CONTAINER_RPCS = (*POD_RPCS, "CreateContainer", "StartContainer", "StopContainer", "RemoveContainer")
IMAGE_RPCS = ("PullImage", "RemoveImage", "ImageStatus")
LIST_100_RPCS = (*CONTAINER_RPCS, "ListContainers")
SLEEP = ("sleep", "3600")


# --- images ------------------------------------------------------------------


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


# --- pods ------------------------------------------------------------------------


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


# --- containers --------------------------------------------------------------------


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
