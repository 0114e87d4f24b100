"""The stats, metrics and pod-resources RPCs of runtime.v1.RuntimeService.

A mixin of RuntimeServicer (which gives it the config, the pods and the
containers). Only ready pods have stats and metrics, as containerd's; the
Stream* calls (KEP-5825) answer what their List counterparts do, collected
and sent a bounded chunk at a time, so 10,000 pods never make one message.
"""

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, TypeVar

from cri.api.v1 import api_pb2 as pb
from cri.config import Config
from cri.errors import FailedPrecondition, InvalidArgument
from cri.log import fields
from cri.runtime import pod_resources
from cri.runtime.cgroup_stats import Pressure, PsiLine
from cri.runtime.containers import Containers
from cri.runtime.netstats import DEFAULT_INTERFACE, Interface
from cri.runtime.pod_stats import PodSample, PodStats
from cri.runtime.pods import Pods
from cri.runtime.sandbox_store import Sandbox, State
from cri.server.pod_metrics import descriptors, pod_metrics
from cri.server.usage_messages import memory_usage, u64

log = logging.getLogger(__name__)
T = TypeVar("T")

STATS_CHUNK = 200  # pods or containers per Stream*Stats message (a pod's stats: ~1 KiB per container)
METRICS_CHUNK = 50  # pods per StreamPodSandboxMetrics message (a pod's metrics: up to ~10 KiB per container)


def chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _psi_data(line: PsiLine) -> pb.PsiData:
    return pb.PsiData(Total=line.total_us, Avg10=line.avg10, Avg60=line.avg60, Avg300=line.avg300)


def psi(p: Pressure | None) -> pb.PsiStats | None:
    if p is None:  # not readable here: the field stays unset rather than zero
        return None
    return pb.PsiStats(Some=_psi_data(p.some), Full=_psi_data(p.full) if p.full is not None else None)


def _interface(i: Interface) -> pb.NetworkInterfaceUsage:
    return pb.NetworkInterfaceUsage(
        name=i.name, rx_bytes=u64(i.rx_bytes), rx_errors=u64(i.rx_errors), tx_bytes=u64(i.tx_bytes),
        tx_errors=u64(i.tx_errors),
    )  # fmt: skip


def network_usage(interfaces: list[Interface], timestamp: int) -> pb.NetworkUsage:
    """All interfaces but lo, and eth0 (else the first) as the default, as containerd reports them."""
    usage = pb.NetworkUsage(timestamp=timestamp, interfaces=[_interface(i) for i in interfaces])
    default = next((i for i in interfaces if i.name == DEFAULT_INTERFACE), interfaces[0] if interfaces else None)
    if default is not None:
        usage.default_interface.CopyFrom(_interface(default))
    return usage


def pod_stats_message(s: PodSample, containers: list[pb.ContainerStats]) -> pb.PodSandboxStats:
    sb = s.sandbox
    linux = pb.LinuxPodSandboxStats(containers=containers)
    cg = s.cgroup
    if cg is not None:
        ts = cg.timestamp
        linux.cpu.CopyFrom(
            pb.CpuUsage(
                timestamp=ts,
                usage_core_nano_seconds=u64(cg.cpu_ns),
                usage_nano_cores=u64(s.nano_cores),
                psi=psi(cg.cpu_psi),
            )
        )
        linux.memory.CopyFrom(memory_usage(ts, cg, psi(cg.memory_psi)))
        linux.process.CopyFrom(pb.ProcessUsage(timestamp=ts, process_count=u64(cg.pids)))
        if cg.io_psi is not None:
            linux.io.CopyFrom(pb.IoUsage(timestamp=ts, psi=psi(cg.io_psi)))
    if s.interfaces is not None:
        linux.network.CopyFrom(network_usage(s.interfaces, cg.timestamp if cg is not None else time.time_ns()))
    return pb.PodSandboxStats(
        attributes=pb.PodSandboxAttributes(
            id=sb.id, metadata=sb.config.metadata, labels=sb.config.labels, annotations=sb.config.annotations
        ),
        linux=linux,
    )


def _pod_filter(filt: pb.PodSandboxStatsFilter | None) -> pb.PodSandboxFilter:
    ready = pb.PodSandboxStateValue(state=pb.SANDBOX_READY)
    if filt is None:
        return pb.PodSandboxFilter(state=ready)
    return pb.PodSandboxFilter(id=filt.id, label_selector=filt.label_selector, state=ready)


class StatsServicer:
    config: Config
    pods: Pods
    containers: Containers

    @functools.cached_property
    def pod_stats(self) -> PodStats:
        return PodStats(self.containers)

    def _layers_dir(self) -> str:
        raise NotImplementedError  # RuntimeServicer's

    def _container_stats(self, samples: list[Any]) -> list[pb.ContainerStats]:
        from cri.server.runtime_service import container_stats  # that module imports this one

        mountpoint = self._layers_dir()
        return [container_stats(c, u, n, mountpoint) for c, u, n in samples]

    async def _pod_stats(self, found: list[Sandbox]) -> list[pb.PodSandboxStats]:
        return [pod_stats_message(s, self._container_stats(s.containers)) for s in await self.pod_stats.collect(found)]

    def _ready(self, request: Any) -> list[Sandbox]:
        return self.pods.list(_pod_filter(request.filter if request.HasField("filter") else None))

    async def PodSandboxStats(self, request: pb.PodSandboxStatsRequest, context: Any) -> pb.PodSandboxStatsResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("PodSandboxStats: pod_sandbox_id is empty")
        sb = self.pods.get(request.pod_sandbox_id)
        if sb.state != State.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready: it has no stats")
        (stats,) = await self._pod_stats([sb])
        return pb.PodSandboxStatsResponse(stats=stats)

    async def ListPodSandboxStats(
        self, request: pb.ListPodSandboxStatsRequest, context: Any
    ) -> pb.ListPodSandboxStatsResponse:
        return pb.ListPodSandboxStatsResponse(stats=await self._pod_stats(self._ready(request)))

    async def StreamPodSandboxStats(
        self, request: pb.StreamPodSandboxStatsRequest, context: Any
    ) -> AsyncIterator[pb.StreamPodSandboxStatsResponse]:
        for chunk in chunks(self._ready(request), STATS_CHUNK):
            yield pb.StreamPodSandboxStatsResponse(pod_sandbox_stats=await self._pod_stats(chunk))

    async def StreamContainerStats(
        self, request: pb.StreamContainerStatsRequest, context: Any
    ) -> AsyncIterator[pb.StreamContainerStatsResponse]:
        found = self.containers.list(request.filter if request.HasField("filter") else None)
        for chunk in chunks(found, STATS_CHUNK):
            samples = await self.containers.stats(chunk)
            yield pb.StreamContainerStatsResponse(container_stats=self._container_stats(samples))

    # --- CRI metrics ------------------------------------------------------------------

    async def ListMetricDescriptors(
        self, request: pb.ListMetricDescriptorsRequest, context: Any
    ) -> pb.ListMetricDescriptorsResponse:
        return pb.ListMetricDescriptorsResponse(descriptors=descriptors(self.config.stats.pod_metric_groups()))

    async def _pod_metrics(self, found: list[Sandbox]) -> list[pb.PodSandboxMetrics]:
        groups = self.config.stats.pod_metric_groups()
        samples = await self.pod_stats.collect_metrics(
            found,
            cgroups=bool({"cpu", "memory", "oom", "pressure", "process"} & set(groups)),
            processes="process" in groups,
            network="network" in groups,
            disk="disk" in groups,
            io="diskIO" in groups,
        )
        return [pod_metrics(s, groups) for s in samples]

    async def ListPodSandboxMetrics(
        self, request: pb.ListPodSandboxMetricsRequest, context: Any
    ) -> pb.ListPodSandboxMetricsResponse:
        return pb.ListPodSandboxMetricsResponse(pod_metrics=await self._pod_metrics(self.pods.list(_pod_filter(None))))

    async def StreamPodSandboxMetrics(
        self, request: pb.StreamPodSandboxMetricsRequest, context: Any
    ) -> AsyncIterator[pb.StreamPodSandboxMetricsResponse]:
        for chunk in chunks(self.pods.list(_pod_filter(None)), METRICS_CHUNK):
            yield pb.StreamPodSandboxMetricsResponse(pod_sandbox_metrics=await self._pod_metrics(chunk))

    # --- pod-level resources -------------------------------------------------------------

    async def UpdatePodSandboxResources(
        self, request: pb.UpdatePodSandboxResourcesRequest, context: Any
    ) -> pb.UpdatePodSandboxResourcesResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("UpdatePodSandboxResources: pod_sandbox_id is empty")
        pod_resources.validate(request.overhead, "overhead")
        pod_resources.validate(request.resources, "resources")
        sb = self.pods.get(request.pod_sandbox_id)
        if sb.state != State.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
        self.pods.record_resources(sb, request.overhead, request.resources)
        try:
            written = await asyncio.to_thread(pod_resources.apply, sb)
        except OSError as exc:  # e.g. a memory limit below what the pod uses (v1: EBUSY)
            raise FailedPrecondition(
                f"recorded, but the pod cgroup refused the limit: {os.strerror(exc.errno or 0)} ({exc.filename})"
            ) from None
        log.info("pod resources updated", extra=fields(id=sb.id, cgroup_files=written))
        return pb.UpdatePodSandboxResourcesResponse()
