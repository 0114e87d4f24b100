"""ListMetricDescriptors and ListPodSandboxMetrics: cAdvisor's metric names, CRI-O's groups and labels.

kubelet reads the descriptors once at startup and drops every sample whose
name it has no descriptor for, or whose label values do not match the
descriptor's keys: every sample below is built from this one table. The
labels are CRI-O's (``id, image, namespace, pod, container``, plus a
metric's own); pod-level samples (network) carry ``container="POD"``, as
CRI-O's. Devices and block I/O are labelled as cAdvisor labels them, where
CRI-O differs: ``device="/dev/vda"`` (CRI-O: ``254:0``), ``operation="Write"``
(CRI-O: ``write``), and the disk group has cAdvisor's ``device`` label
(CRI-O's has none). Values are UInt64 by the CRI: seconds are whole
seconds, as CRI-O sends them.
"""

import time
from collections.abc import Collection
from dataclasses import dataclass

from cri.api.v1 import api_pb2 as pb
from cri.runtime.cgroup_stats import CgroupStats, DeviceIo, Pressure, ProcessInfo
from cri.runtime.container_store import Container
from cri.runtime.netstats import Interface
from cri.runtime.pod_stats import ContainerSample, FsUsage, MetricsSample
from cri.runtime.sandbox_store import Sandbox

BASE_LABELS = ("id", "image", "namespace", "pod", "container")
ALWAYS = ""  # the group of container_last_seen, always collected
NS = 10**9


@dataclass(frozen=True)
class Desc:
    name: str
    group: str
    help: str
    extra: tuple[str, ...] = ()  # label keys after BASE_LABELS

    def message(self) -> pb.MetricDescriptor:
        return pb.MetricDescriptor(name=self.name, help=self.help, label_keys=[*BASE_LABELS, *self.extra])


_NET = ("interface",)
_DEV = ("device",)
DESCRIPTORS = (
    Desc("container_last_seen", ALWAYS, "Last time a container was seen by the exporter"),
    Desc("container_cpu_user_seconds_total", "cpu", "Cumulative user CPU time consumed in seconds."),
    Desc("container_cpu_system_seconds_total", "cpu", "Cumulative system CPU time consumed in seconds."),
    Desc("container_cpu_usage_seconds_total", "cpu", "Cumulative CPU time consumed in seconds.", ("cpu",)),
    Desc("container_cpu_cfs_periods_total", "cpu", "Number of elapsed enforcement period intervals."),
    Desc("container_cpu_cfs_throttled_periods_total", "cpu", "Number of throttled period intervals."),
    Desc("container_cpu_cfs_throttled_seconds_total", "cpu", "Total time duration the container has been throttled."),
    Desc("container_memory_cache", "memory", "Number of bytes of page cache memory."),
    Desc("container_memory_rss", "memory", "Size of RSS in bytes."),
    Desc("container_memory_kernel_usage", "memory", "Size of kernel memory allocated in bytes."),
    Desc("container_memory_mapped_file", "memory", "Size of memory mapped files in bytes."),
    Desc("container_memory_swap", "memory", "Container swap usage in bytes."),
    Desc("container_memory_failcnt", "memory", "Number of memory usage hits limits"),
    Desc("container_memory_usage_bytes", "memory", "Current memory usage in bytes, including all memory regardless of when it was accessed"),  # noqa: E501
    Desc("container_memory_max_usage_bytes", "memory", "Maximum memory usage recorded in bytes"),
    Desc("container_memory_working_set_bytes", "memory", "Current working set in bytes."),
    Desc("container_memory_failures_total", "memory", "Cumulative count of memory allocation failures.", ("failure_type", "scope")),  # noqa: E501
    Desc("container_fs_inodes_free", "disk", "Number of free inodes.", _DEV),
    Desc("container_fs_inodes_total", "disk", "Total number of inodes.", _DEV),
    Desc("container_fs_limit_bytes", "disk", "Filesystem limit in bytes.", _DEV),
    Desc("container_fs_usage_bytes", "disk", "Current filesystem usage in bytes.", _DEV),
    Desc("container_fs_reads_bytes_total", "diskIO", "Cumulative count of bytes read", _DEV),
    Desc("container_fs_reads_total", "diskIO", "Cumulative count of reads completed", _DEV),
    Desc("container_fs_writes_bytes_total", "diskIO", "Cumulative count of bytes written", _DEV),
    Desc("container_fs_writes_total", "diskIO", "Cumulative count of writes completed", _DEV),
    Desc("container_blkio_device_usage_total", "diskIO", "Blkio Device bytes usage", ("device", "major", "minor", "operation")),  # noqa: E501
    Desc("container_network_receive_bytes_total", "network", "Cumulative count of bytes received", _NET),
    Desc("container_network_receive_packets_total", "network", "Cumulative count of packets received", _NET),
    Desc("container_network_receive_packets_dropped_total", "network", "Cumulative count of packets dropped while receiving", _NET),  # noqa: E501
    Desc("container_network_receive_errors_total", "network", "Cumulative count of errors encountered while receiving", _NET),  # noqa: E501
    Desc("container_network_transmit_bytes_total", "network", "Cumulative count of bytes transmitted", _NET),
    Desc("container_network_transmit_packets_total", "network", "Cumulative count of packets transmitted", _NET),
    Desc("container_network_transmit_packets_dropped_total", "network", "Cumulative count of packets dropped while transmitting", _NET),  # noqa: E501
    Desc("container_network_transmit_errors_total", "network", "Cumulative count of errors encountered while transmitting", _NET),  # noqa: E501
    Desc("container_oom_events_total", "oom", "Count of out of memory events observed for the container"),
    Desc("container_file_descriptors", "process", "Number of open file descriptors for the container."),
    Desc("container_processes", "process", "Number of processes running inside the container."),
    Desc("container_sockets", "process", "Number of open sockets for the container."),
    Desc("container_threads", "process", "Number of threads running inside the container"),
    Desc("container_threads_max", "process", "Maximum number of threads allowed inside the container, infinity if value is zero"),  # noqa: E501
    Desc("container_ulimits_soft", "process", "Soft ulimit values for the container root process. Unlimited if -1, except priority and nice", ("ulimit",)),  # noqa: E501
    Desc("container_spec_cpu_period", "spec", "CPU period of the container."),
    Desc("container_spec_cpu_shares", "spec", "CPU share of the container."),
    Desc("container_spec_cpu_quota", "spec", "CPU quota of the container."),
    Desc("container_spec_memory_limit_bytes", "spec", "Memory limit for the container in bytes."),
    Desc("container_spec_memory_reservation_limit_bytes", "spec", "Memory reservation limit for the container."),
    Desc("container_spec_memory_swap_limit_bytes", "spec", "Memory swap limit for the container."),
    Desc("container_start_time_seconds", "spec", "Start time of the container since unix epoch in seconds."),
    Desc("container_pressure_cpu_stalled_seconds_total", "pressure", "Total time duration no tasks in the container could make progress due to CPU congestion."),  # noqa: E501
    Desc("container_pressure_cpu_waiting_seconds_total", "pressure", "Total time duration tasks in the container have waited due to CPU congestion."),  # noqa: E501
    Desc("container_pressure_memory_stalled_seconds_total", "pressure", "Total time duration no tasks in the container could make progress due to memory congestion."),  # noqa: E501
    Desc("container_pressure_memory_waiting_seconds_total", "pressure", "Total time duration tasks in the container have waited due to memory congestion."),  # noqa: E501
    Desc("container_pressure_io_stalled_seconds_total", "pressure", "Total time duration no tasks in the container could make progress due to IO congestion."),  # noqa: E501
    Desc("container_pressure_io_waiting_seconds_total", "pressure", "Total time duration tasks in the container have waited due to IO congestion."),  # noqa: E501
)  # fmt: skip
BY_NAME = {d.name: d for d in DESCRIPTORS}


def descriptors(groups: Collection[str]) -> list[pb.MetricDescriptor]:
    return [d.message() for d in DESCRIPTORS if d.group == ALWAYS or d.group in groups]


class _Samples:
    """Metrics of one object, all with its base label values."""

    def __init__(self, base: list[str], timestamp: int) -> None:
        self.base = base
        self.timestamp = timestamp
        self.out: list[pb.Metric] = []

    def add(self, name: str, value: int | None, kind: pb.MetricType, *extra: str) -> None:
        if value is None:  # unknown here (a file this kernel lacks): no sample rather than a wrong one
            return
        desc = BY_NAME[name]  # an undescribed name is a bug: kubelet would drop it
        assert len(extra) == len(desc.extra), name
        self.out.append(
            pb.Metric(
                name=name,
                timestamp=self.timestamp,
                metric_type=kind,
                label_values=[*self.base, *extra],
                value=pb.UInt64Value(value=max(value, 0)),
            )
        )


def _s(ns: int | None) -> int | None:
    return ns // NS if ns is not None else None


def _cpu(m: _Samples, cg: CgroupStats) -> None:
    m.add("container_cpu_user_seconds_total", _s(cg.cpu_user_ns), pb.COUNTER)
    m.add("container_cpu_system_seconds_total", _s(cg.cpu_system_ns), pb.COUNTER)
    m.add("container_cpu_usage_seconds_total", _s(cg.cpu_ns), pb.COUNTER, "total")
    m.add("container_cpu_cfs_periods_total", cg.cfs_periods, pb.COUNTER)
    m.add("container_cpu_cfs_throttled_periods_total", cg.cfs_throttled_periods, pb.COUNTER)
    m.add("container_cpu_cfs_throttled_seconds_total", _s(cg.cfs_throttled_ns), pb.COUNTER)


def _memory(m: _Samples, cg: CgroupStats) -> None:
    m.add("container_memory_cache", cg.cache, pb.GAUGE)
    m.add("container_memory_rss", cg.rss, pb.GAUGE)
    m.add("container_memory_kernel_usage", cg.kernel, pb.GAUGE)
    m.add("container_memory_mapped_file", cg.mapped_file, pb.GAUGE)
    m.add("container_memory_swap", cg.swap, pb.GAUGE)
    m.add("container_memory_failcnt", cg.failcnt, pb.COUNTER)
    m.add("container_memory_usage_bytes", cg.memory_usage, pb.GAUGE)
    m.add("container_memory_max_usage_bytes", cg.memory_max_usage, pb.GAUGE)
    m.add("container_memory_working_set_bytes", cg.working_set, pb.GAUGE)
    for kind, value in (("pgfault", cg.page_faults), ("pgmajfault", cg.major_page_faults)):
        for scope in ("container", "hierarchy"):  # the cgroup's counters include its children's
            m.add("container_memory_failures_total", value, pb.COUNTER, kind, scope)


def _disk(m: _Samples, fs: FsUsage) -> None:
    m.add("container_fs_inodes_free", fs.inodes_free, pb.GAUGE, fs.device)
    m.add("container_fs_inodes_total", fs.inodes_total, pb.GAUGE, fs.device)
    m.add("container_fs_limit_bytes", fs.limit_bytes, pb.GAUGE, fs.device)
    m.add("container_fs_usage_bytes", fs.usage_bytes, pb.GAUGE, fs.device)


def _disk_io(m: _Samples, devices: list[DeviceIo]) -> None:
    for d in devices:
        m.add("container_fs_reads_bytes_total", d.bytes.get("Read"), pb.COUNTER, d.device)
        m.add("container_fs_writes_bytes_total", d.bytes.get("Write"), pb.COUNTER, d.device)
        m.add("container_fs_reads_total", d.ios.get("Read"), pb.COUNTER, d.device)
        m.add("container_fs_writes_total", d.ios.get("Write"), pb.COUNTER, d.device)
        for op, value in d.bytes.items():  # blkio's operation names, as cAdvisor labels them
            m.add("container_blkio_device_usage_total", value, pb.COUNTER, d.device, str(d.major), str(d.minor), op)


def _pressure(m: _Samples, what: str, p: Pressure | None) -> None:
    if p is None:  # no PSI for this cgroup (cgroup v1 only, or a kernel without it)
        return
    m.add(f"container_pressure_{what}_waiting_seconds_total", p.some.total_us // 10**6, pb.COUNTER)
    if p.full is not None:
        m.add(f"container_pressure_{what}_stalled_seconds_total", p.full.total_us // 10**6, pb.COUNTER)


def _process(m: _Samples, p: ProcessInfo, cg: CgroupStats | None) -> None:
    pids = cg.pids if cg is not None and cg.pids is not None else p.processes
    m.add("container_processes", pids, pb.GAUGE)
    m.add("container_threads", p.threads, pb.GAUGE)
    m.add("container_file_descriptors", p.file_descriptors, pb.GAUGE)
    m.add("container_sockets", p.sockets, pb.GAUGE)
    m.add("container_threads_max", (cg.pids_max or 0) if cg is not None else None, pb.GAUGE)
    m.add("container_ulimits_soft", p.max_open_files, pb.GAUGE, "max_open_files")


def _spec(m: _Samples, c: Container) -> None:
    r = pb.LinuxContainerResources.FromString(c.resources)
    m.add("container_spec_cpu_period", r.cpu_period, pb.GAUGE)
    m.add("container_spec_cpu_shares", r.cpu_shares, pb.GAUGE)
    m.add("container_spec_cpu_quota", r.cpu_quota if r.cpu_quota > 0 else None, pb.GAUGE)
    m.add("container_spec_memory_limit_bytes", r.memory_limit_in_bytes, pb.GAUGE)
    m.add("container_spec_memory_swap_limit_bytes", r.memory_swap_limit_in_bytes, pb.GAUGE)
    reservation = r.unified.get("memory.min", "0")
    reserved = int(reservation) if reservation.isdigit() else None
    m.add("container_spec_memory_reservation_limit_bytes", reserved, pb.GAUGE)
    m.add("container_start_time_seconds", (c.started_at or c.created_at) // NS, pb.GAUGE)


def _network(m: _Samples, interfaces: list[Interface]) -> None:
    for i in interfaces:
        m.add("container_network_receive_bytes_total", i.rx_bytes, pb.COUNTER, i.name)
        m.add("container_network_receive_packets_total", i.rx_packets, pb.COUNTER, i.name)
        m.add("container_network_receive_packets_dropped_total", i.rx_dropped, pb.COUNTER, i.name)
        m.add("container_network_receive_errors_total", i.rx_errors, pb.COUNTER, i.name)
        m.add("container_network_transmit_bytes_total", i.tx_bytes, pb.COUNTER, i.name)
        m.add("container_network_transmit_packets_total", i.tx_packets, pb.COUNTER, i.name)
        m.add("container_network_transmit_packets_dropped_total", i.tx_dropped, pb.COUNTER, i.name)
        m.add("container_network_transmit_errors_total", i.tx_errors, pb.COUNTER, i.name)


def container_metrics(sb: Sandbox, s: ContainerSample, groups: Collection[str], now: int) -> pb.ContainerMetrics:
    c, cg = s.container, s.cgroup
    meta = sb.config.metadata
    m = _Samples([c.id, c.image_name, meta.namespace, meta.name, c.config.metadata.name], now)
    m.add("container_last_seen", now // NS, pb.GAUGE)
    if cg is not None:
        if "cpu" in groups:
            _cpu(m, cg)
        if "memory" in groups:
            _memory(m, cg)
        if "oom" in groups:
            m.add("container_oom_events_total", cg.oom_kills, pb.COUNTER)
        if "pressure" in groups:
            for what, p in (("cpu", cg.cpu_psi), ("memory", cg.memory_psi), ("io", cg.io_psi)):
                _pressure(m, what, p)
    if "process" in groups and s.processes is not None:
        _process(m, s.processes, cg)
    if "spec" in groups:
        _spec(m, c)
    if "disk" in groups and s.fs is not None:
        _disk(m, s.fs)
    if "diskIO" in groups and s.io is not None:
        _disk_io(m, s.io)
    return pb.ContainerMetrics(container_id=c.id, metrics=m.out)


def pod_metrics(sample: MetricsSample, groups: Collection[str], now: int | None = None) -> pb.PodSandboxMetrics:
    """One pod's PodSandboxMetrics: network at the pod level, the rest per running container."""
    now = now or time.time_ns()
    sb = sample.sandbox
    meta = sb.config.metadata
    pod = _Samples([sb.id, "", meta.namespace, meta.name, "POD"], now)
    if "network" in groups and sample.interfaces:
        _network(pod, sample.interfaces)
    return pb.PodSandboxMetrics(
        pod_sandbox_id=sb.id,
        metrics=pod.out,
        container_metrics=[container_metrics(sb, s, groups, now) for s in sample.containers],
    )
