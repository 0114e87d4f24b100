"""Samples of pods for PodSandboxStats and ListPodSandboxMetrics.

A pod has a cgroup only when kubelet gave it a ``cgroup_parent``; then its
CPU, memory and process figures are that cgroup's (it holds every container
of the pod). A pod without one is reported as the sum of its running
containers' cgroups: counters and sizes add up, but it has no memory limit
(so no ``available_bytes``) and no pressure of its own.

Network figures come from the pod's own network namespace. A host-network
pod gets none, as containerd does: the host's interfaces carry every pod's
and the node's traffic, and attributing them to one pod would mislead.

A container's disk figures are those of its writable layer, as CRI-O's: the
filesystem holding it (size and inodes, from statvfs) and what the layer
itself uses (the walk ContainerStats makes).
"""

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from cri.host import MOUNTINFO
from cri.log import fields
from cri.runtime import cgroup_stats, netstats
from cri.runtime.cgroup_stats import CgroupStats, DeviceIo, ProcessInfo
from cri.runtime.container_store import Container
from cri.runtime.container_store import State as CState
from cri.runtime.containers import Containers
from cri.runtime.netstats import Interface
from cri.runtime.pods import host_network
from cri.runtime.sandbox_store import Sandbox
from cri.runtime.stats import Usage, layer_usage

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class PodSample:
    sandbox: Sandbox
    cgroup: CgroupStats | None  # the pod's cgroup, or the sum of its containers' (own_cgroup False)
    own_cgroup: bool
    nano_cores: int | None
    interfaces: list[Interface] | None  # None: no network namespace of its own, or unreadable
    containers: list[tuple[Container, Usage, int | None]]  # as Containers.stats gives them


@dataclass(frozen=True)
class FsUsage:
    """The filesystem of a container's writable layer, and what the layer uses of it."""

    device: str
    limit_bytes: int
    inodes_total: int
    inodes_free: int
    usage_bytes: int


@dataclass(frozen=True)
class ContainerSample:
    container: Container
    cgroup: CgroupStats | None
    processes: ProcessInfo | None
    fs: FsUsage | None = None
    io: list[DeviceIo] | None = None


@dataclass(frozen=True)
class MetricsSample:
    sandbox: Sandbox
    interfaces: list[Interface] | None
    containers: list[ContainerSample]


def nano_cores(previous: tuple[int, int] | None, timestamp: int, cpu_ns: int) -> int | None:
    """CPU use in nanocores between the previous (time, cpu ns) sample and this one:
    kubelet reports it as is, so crid computes it (None for the first sample)."""
    if previous is None or timestamp <= previous[0]:
        return None
    return max(cpu_ns - previous[1], 0) * 10**9 // (timestamp - previous[0])


def fs_usage(upper: str, sys: str = cgroup_stats.SYS, mountinfo: str = MOUNTINFO) -> FsUsage | None:
    """Blocking; None when the layer is gone (the container is being removed)."""
    try:
        st, vfs = os.stat(upper), os.statvfs(upper)
    except OSError:
        return None
    used, _ = layer_usage(upper)
    device = cgroup_stats.device_name(os.major(st.st_dev), os.minor(st.st_dev), sys, mountinfo)
    return FsUsage(device, vfs.f_blocks * vfs.f_frsize, vfs.f_files, vfs.f_ffree, used)


def running(containers: Containers, sb: Sandbox) -> list[Container]:
    return [c for c in containers.of_pod(sb.id) if c.state == CState.RUNNING]


class PodStats:
    def __init__(self, containers: Containers) -> None:
        self.containers = containers
        self._cpu_samples: dict[str, tuple[int, int]] = {}  # pod id -> (time, cpu ns) of its last sample

    @staticmethod
    async def _in_thread(fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(netstats.EXECUTOR, fn)

    @staticmethod
    def _interfaces(sb: Sandbox) -> list[Interface] | None:
        netns = sb.namespaces.get("net")
        if not netns or host_network(sb.config):
            return None
        try:
            return netstats.read_interfaces(netns)
        except OSError as exc:  # the pod is being stopped: its namespace is going away
            log.debug("no network stats for pod", extra=fields(id=sb.id, error=str(exc)))
            return None

    @staticmethod
    def _pod_cgroup(sb: Sandbox, members: list[Container]) -> tuple[CgroupStats | None, bool]:
        parent = sb.config.linux.cgroup_parent
        if parent:
            return cgroup_stats.read(parent), True
        if not members:
            return None, False
        return cgroup_stats.total(cgroup_stats.read(c.cgroups_path) for c in members), False

    async def collect(self, sandboxes: list[Sandbox]) -> list[PodSample]:
        """PodSandboxStats of each pod: pod cgroup, network, and its running containers."""
        members = {sb.id: running(self.containers, sb) for sb in sandboxes}

        def read_all() -> list[tuple[tuple[CgroupStats | None, bool], list[Interface] | None]]:
            return [(self._pod_cgroup(sb, members[sb.id]), self._interfaces(sb)) for sb in sandboxes]

        pods = await self._in_thread(read_all)
        usages = await self.containers.stats([c for sb in sandboxes for c in members[sb.id]])
        by_pod: dict[str, list[tuple[Container, Usage, int | None]]] = {sb.id: [] for sb in sandboxes}
        for sample in usages:
            by_pod[sample[0].sandbox_id].append(sample)
        out = []
        for sb, ((cg, own), interfaces) in zip(sandboxes, pods, strict=True):
            cores = None
            if cg is not None and cg.cpu_ns is not None:
                cores = nano_cores(self._cpu_samples.get(sb.id), cg.timestamp, cg.cpu_ns)
                self._cpu_samples[sb.id] = (cg.timestamp, cg.cpu_ns)
            out.append(PodSample(sb, cg, own, cores, interfaces, by_pod[sb.id]))
        self._prune()
        return out

    def _prune(self) -> None:
        live = self.containers.pods.ids()
        if len(self._cpu_samples) > 2 * len(live) + 16:
            self._cpu_samples = {k: v for k, v in self._cpu_samples.items() if k in live}

    async def collect_metrics(
        self,
        sandboxes: list[Sandbox],
        cgroups: bool,
        processes: bool,
        network: bool,
        disk: bool,
        io: bool,
    ) -> list[MetricsSample]:
        """What ListPodSandboxMetrics needs of each pod; only the parts its metric groups use are read."""
        members = {sb.id: running(self.containers, sb) for sb in sandboxes}

        def container(c: Container) -> ContainerSample:
            return ContainerSample(
                c,
                cgroup_stats.read(c.cgroups_path) if cgroups else None,
                cgroup_stats.process_info(c.cgroups_path) if processes else None,
                fs_usage(os.path.join(self.containers.persist(c.id), "upper")) if disk else None,
                cgroup_stats.read_io(c.cgroups_path) if io else None,
            )

        def read_all() -> list[MetricsSample]:
            return [
                MetricsSample(sb, self._interfaces(sb) if network else None, [container(c) for c in members[sb.id]])
                for sb in sandboxes
            ]

        return await self._in_thread(read_all)
