"""Pod stats and CRI metrics without a daemon: netlink answers and the domain
replaced by fakes (the cgroup and disk readers: test_cgroup_stats.py)."""

import asyncio
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.config import POD_METRIC_GROUPS, Config, ConfigError, from_dict
from cri.errors import InvalidArgument
from cri.runtime import cgroup_stats, pod_resources
from cri.runtime.cgroup_stats import CgroupStats, DeviceIo, Pressure, ProcessInfo, PsiLine
from cri.runtime.container_store import Container
from cri.runtime.container_store import State as CState
from cri.runtime.netstats import Interface, parse_links
from cri.runtime.pod_stats import ContainerSample, FsUsage, MetricsSample, PodSample, PodStats, nano_cores
from cri.runtime.sandbox_store import Sandbox, State
from cri.runtime.stats import Usage
from cri.server import stats_service
from cri.server.pod_metrics import BASE_LABELS, DESCRIPTORS, descriptors, pod_metrics
from cri.server.stats_service import StatsServicer, pod_stats_message


class _MetricsContainers:
    def __init__(self, groups: list[str], containers: list[Container], root: str) -> None:
        self.config = from_dict({"stats": {"included_pod_metrics": groups}})
        self.containers = containers
        self.root = root

    def of_pod(self, pod_id: str) -> list[Container]:
        return [c for c in self.containers if c.sandbox_id == pod_id]

    def persist(self, cid: str) -> str:
        return os.path.join(self.root, cid)


@pytest.mark.parametrize(("groups", "disk", "io"), [(["disk", "cpu"], True, False), (["diskIO"], False, True)])
def test_collect_metrics_reads_disk_and_io_for_their_groups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, groups: list[str], disk: bool, io: bool
) -> None:
    sb = sandbox()
    c = container(sb)
    (tmp_path / c.id / "upper").mkdir(parents=True)
    read: list[str] = []

    def read_io(path: str) -> list[DeviceIo]:
        read.append(path)
        return []

    monkeypatch.setattr(cgroup_stats, "read_io", read_io)
    stats = PodStats(_MetricsContainers(groups, [c], str(tmp_path)))  # type: ignore[arg-type]
    picked = {"disk": "disk" in groups, "io": "diskIO" in groups}  # as the servicer decides from the groups
    (sample,) = asyncio.run(stats.collect_metrics([sb], cgroups=False, processes=False, network=False, **picked))
    (cs,) = sample.containers
    assert (cs.fs is not None, cs.io is not None, read) == (disk, io, [c.cgroups_path] if io else [])


# --- netlink ------------------------------------------------------------------------------------


class FakeLink:
    def __init__(self, **attrs: Any) -> None:
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        return self.attrs.get(name)


def test_parse_links() -> None:
    stats = {"rx_bytes": 100, "tx_bytes": 200, "rx_packets": 1, "tx_packets": 2, "rx_errors": 3, "tx_dropped": 4}
    links = [
        FakeLink(IFLA_IFNAME="lo", IFLA_STATS64={"rx_bytes": 9}),
        FakeLink(IFLA_IFNAME="net1", IFLA_STATS={"rx_bytes": 5}),  # only the 32-bit counters
        FakeLink(IFLA_IFNAME="eth0", IFLA_STATS64=stats),
        FakeLink(IFLA_IFNAME="tun0"),  # no statistics at all
    ]
    got = parse_links(links)
    assert [i.name for i in got] == ["eth0", "net1", "tun0"]  # lo left out; eth0 first
    assert got[0] == Interface("eth0", 100, 1, 3, 0, 200, 2, 0, 4)
    assert got[1].rx_bytes == 5 and got[2].tx_bytes == 0


def test_network_usage_defaults_to_eth0_else_the_first() -> None:
    eth = Interface("eth0", 1, 0, 0, 0, 2, 0, 0, 0)
    other = Interface("net1", 3, 0, 0, 0, 4, 0, 0, 0)
    usage = stats_service.network_usage([other, eth], 5)
    assert usage.default_interface.name == "eth0" and [i.name for i in usage.interfaces] == ["net1", "eth0"]
    assert stats_service.network_usage([other], 5).default_interface.rx_bytes.value == 3
    assert not stats_service.network_usage([], 5).HasField("default_interface")


# --- nano cores --------------------------------------------------------------------------------


def test_nano_cores_from_two_samples() -> None:
    assert nano_cores(None, 10**9, 5) is None  # the first sample has nothing to compare with
    half_a_core = nano_cores((10**9, 10**9), 3 * 10**9, 2 * 10**9)
    assert half_a_core == 5 * 10**8
    assert nano_cores((10**9, 10**9), 2 * 10**9, 3 * 10**9) == 2 * 10**9  # two cores
    assert nano_cores((10**9, 10**9), 10**9, 2 * 10**9) is None  # same instant: no rate
    assert nano_cores((10**9, 5 * 10**9), 2 * 10**9, 10**9) == 0  # a summed pod lost a container


# --- metrics: every sample has a descriptor with its label keys ------------------------------------


def sandbox(i: int = 0, **linux: Any) -> Sandbox:
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"pod{i}", namespace="ns", uid=f"u{i}"),
        labels={"app": "x"},
        linux=pb.LinuxPodSandboxConfig(**linux),
    )
    return Sandbox(f"{i:064x}", f"pod{i}_ns", "fp", "", State.READY, 1, config, namespaces={"net": "/nonexistent"})


def container(sb: Sandbox, i: int = 0) -> Container:
    resources = pb.LinuxContainerResources(
        cpu_period=100_000, cpu_quota=50_000, cpu_shares=512, memory_limit_in_bytes=1 << 30,
        memory_swap_limit_in_bytes=1 << 30, unified={"memory.min": "1024"},
    )  # fmt: skip
    config = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=f"c{i}"), image=pb.ImageSpec(image="busybox"))
    return Container(
        f"{int(sb.id, 16) * 16 + i + 1:064x}", f"c{i}", "fp", sb.id, CState.RUNNING, 10**18, config,
        image_name="example.com/busybox:1", started_at=2 * 10**18, resources=resources.SerializeToString(),
        cgroups_path=f"/pod/{i}",
    )  # fmt: skip


FULL = CgroupStats(
    timestamp=1, cpu_ns=3 * 10**9, cpu_user_ns=2 * 10**9, cpu_system_ns=10**9, cfs_periods=1, cfs_throttled_periods=1,
    cfs_throttled_ns=10**9, memory_usage=5, memory_max_usage=6, working_set=4, rss=3, cache=2, mapped_file=1, kernel=1,
    swap=0, failcnt=0, page_faults=9, major_page_faults=1, memory_limit=100, oom_kills=1, pids=2, pids_max=10,
    cpu_psi=Pressure(PsiLine(3 * 10**6, 0, 0, 0), PsiLine(10**6, 0, 0, 0)),
    memory_psi=Pressure(PsiLine(1, 0, 0, 0), PsiLine(1, 0, 0, 0)),
    io_psi=Pressure(PsiLine(1, 0, 0, 0), PsiLine(1, 0, 0, 0)),
)  # fmt: skip


FS = FsUsage("/dev/vda", limit_bytes=10 << 30, inodes_total=1000, inodes_free=900, usage_bytes=4096)
IO = [
    DeviceIo("/dev/vda", 254, 0, {"Read": 4096, "Write": 8192, "Sync": 12288, "Async": 0, "Total": 12288},
             {"Read": 1, "Write": 2, "Sync": 3, "Async": 0, "Total": 3}),
    DeviceIo("/dev/vdb", 254, 16, {"Read": 0, "Write": 512}, {"Read": 0, "Write": 1}),
]  # fmt: skip


def full_sample() -> MetricsSample:
    sb = sandbox()
    iface = Interface("eth0", 1, 2, 3, 4, 5, 6, 7, 8)
    c = ContainerSample(container(sb), FULL, ProcessInfo(2, 3, 4, 1, 1024), FS, IO)
    return MetricsSample(sb, [iface], [c])


def all_metrics(pm: pb.PodSandboxMetrics) -> list[pb.Metric]:
    return [*pm.metrics, *(m for c in pm.container_metrics for m in c.metrics)]


def test_every_sample_has_a_descriptor_with_its_label_keys() -> None:
    keys = {d.name: list(d.label_keys) for d in descriptors(POD_METRIC_GROUPS)}
    metrics = all_metrics(pod_metrics(full_sample(), POD_METRIC_GROUPS, now=7 * 10**9))
    for m in metrics:
        assert m.name in keys, m.name
        assert len(m.label_values) == len(keys[m.name]), m
        assert list(keys[m.name][: len(BASE_LABELS)]) == list(BASE_LABELS)
    # and a full sample uses every descriptor: none is described without ever being sent
    assert {m.name for m in metrics} == set(keys)
    assert len(keys) == len(DESCRIPTORS)


def test_metric_values_and_labels() -> None:
    pm = pod_metrics(full_sample(), POD_METRIC_GROUPS, now=7 * 10**9)
    assert pm.pod_sandbox_id == sandbox().id
    rx = next(m for m in pm.metrics if m.name == "container_network_receive_bytes_total")
    assert list(rx.label_values) == [sandbox().id, "", "ns", "pod0", "POD", "eth0"] and rx.metric_type == pb.COUNTER
    (cm,) = pm.container_metrics
    by = {(m.name, tuple(m.label_values[len(BASE_LABELS) :])): m for m in cm.metrics}
    usage = by[("container_cpu_usage_seconds_total", ("total",))]
    assert list(usage.label_values[:5]) == [cm.container_id, "example.com/busybox:1", "ns", "pod0", "c0"]
    assert usage.value.value == 3 and usage.timestamp == 7 * 10**9  # whole seconds, as CRI-O
    assert by[("container_last_seen", ())].value.value == 7 and by[("container_last_seen", ())].metric_type == pb.GAUGE
    assert by[("container_pressure_cpu_waiting_seconds_total", ())].value.value == 3
    assert by[("container_spec_memory_reservation_limit_bytes", ())].value.value == 1024
    assert by[("container_start_time_seconds", ())].value.value == 2 * 10**9
    assert by[("container_memory_failures_total", ("pgmajfault", "hierarchy"))].value.value == 1
    assert by[("container_fs_usage_bytes", ("/dev/vda",))].value.value == 4096
    assert by[("container_fs_limit_bytes", ("/dev/vda",))].value.value == 10 << 30
    assert by[("container_fs_inodes_free", ("/dev/vda",))].metric_type == pb.GAUGE
    assert by[("container_fs_writes_bytes_total", ("/dev/vdb",))].value.value == 512
    assert by[("container_fs_reads_total", ("/dev/vda",))].value.value == 1
    write_ops = by[("container_blkio_device_usage_total", ("/dev/vda", "254", "0", "Write"))]
    assert write_ops.value.value == 8192 and write_ops.metric_type == pb.COUNTER
    blkio = [m for m in cm.metrics if m.name == "container_blkio_device_usage_total"]
    assert len(blkio) == 5 + 2  # every operation of every device


def test_groups_select_what_is_described_and_sent() -> None:
    assert [d.name for d in descriptors([])] == ["container_last_seen"]
    only_last_seen = all_metrics(pod_metrics(full_sample(), []))
    assert {m.name for m in only_last_seen} == {"container_last_seen"}
    cpu = {d.name for d in descriptors(["cpu"])}
    assert {m.name for m in all_metrics(pod_metrics(full_sample(), ["cpu"]))} == cpu
    # a value crid could not read is left out, never sent as zero
    sb = sandbox()
    bare = MetricsSample(sb, None, [ContainerSample(container(sb), CgroupStats(1), None)])
    assert {m.name for m in all_metrics(pod_metrics(bare, POD_METRIC_GROUPS))} == {
        "container_last_seen", "container_spec_cpu_period", "container_spec_cpu_shares", "container_spec_cpu_quota",
        "container_spec_memory_limit_bytes", "container_spec_memory_swap_limit_bytes",
        "container_spec_memory_reservation_limit_bytes", "container_start_time_seconds",
    }  # fmt: skip


def test_config_groups() -> None:
    assert Config().stats.pod_metric_groups() == POD_METRIC_GROUPS  # every group by default
    assert {"disk", "diskIO"} <= set(POD_METRIC_GROUPS)
    assert from_dict({"stats": {"included_pod_metrics": []}}).stats.pod_metric_groups() == ()  # CRI-O's default
    assert from_dict({"stats": {"included_pod_metrics": ["all"]}}).stats.pod_metric_groups() == POD_METRIC_GROUPS
    assert from_dict({"stats": {"included_pod_metrics": ["cpu", "oom"]}}).stats.pod_metric_groups() == ("cpu", "oom")
    assert from_dict({"stats": {"included_pod_metrics": ["disk", "diskIO"]}}).stats.pod_metric_groups() == (
        "disk",
        "diskIO",
    )
    for bad in (["hugetlb"], ["blkio"], ["all", "cpu"], ["cpu", "cpu"], "cpu"):
        with pytest.raises(ConfigError, match="included_pod_metrics"):
            from_dict({"stats": {"included_pod_metrics": bad}})


# --- PodSandboxStats messages -------------------------------------------------------------------


def test_pod_stats_message() -> None:
    sb = sandbox()
    sample = PodSample(sb, FULL, True, 123, [Interface("eth0", 1, 0, 0, 0, 2, 0, 0, 0)], [])
    msg = pod_stats_message(sample, [])
    linux = msg.linux
    assert msg.attributes.id == sb.id and msg.attributes.labels == {"app": "x"}
    assert (linux.cpu.usage_core_nano_seconds.value, linux.cpu.usage_nano_cores.value) == (3 * 10**9, 123)
    assert linux.cpu.psi.Some.Total == 3 * 10**6 and linux.io.psi.Full.Total == 1
    assert (linux.memory.working_set_bytes.value, linux.memory.available_bytes.value) == (4, 96)
    assert linux.process.process_count.value == 2 and linux.network.default_interface.tx_bytes.value == 2
    unknown = pod_stats_message(PodSample(sb, None, False, None, None, []), [])
    assert not unknown.linux.HasField("cpu") and not unknown.linux.HasField("network")
    no_cgroup = pod_stats_message(PodSample(sb, None, False, None, [Interface("eth0", 1, 0, 0, 0, 2, 0, 0, 0)], []), [])
    assert no_cgroup.linux.network.timestamp > 0  # a pod without cgroup nor containers still has a network
    first = pod_stats_message(PodSample(sb, CgroupStats(1, cpu_ns=5), True, None, None, []), [])
    assert first.linux.cpu.usage_core_nano_seconds.value == 5 and not first.linux.cpu.HasField("usage_nano_cores")


# --- the Stream* calls send bounded chunks ---------------------------------------------------------


class FakePods:
    def __init__(self, pods: list[Sandbox]) -> None:
        self.pods = pods

    def list(self, filt: pb.PodSandboxFilter | None) -> list[Sandbox]:
        assert filt is not None and filt.state.state == pb.SANDBOX_READY  # only ready pods have stats
        return self.pods


Samples = list[tuple[Container, Usage, int | None]]


class FakeContainers:
    def __init__(self, containers: list[Container]) -> None:
        self.containers = containers

    def list(self, filt: object) -> list[Container]:
        return self.containers

    async def stats(self, found: "Sequence[Container]") -> Samples:
        return [(c, Usage(timestamp=1, cpu_ns=5, memory_usage=10), 1) for c in found]


class FakeCollector:
    def __init__(self) -> None:
        self.calls: list[int] = []

    async def collect(self, found: list[Sandbox]) -> list[PodSample]:
        self.calls.append(len(found))
        return [PodSample(sb, FULL, True, 1, [Interface("eth0", 1, 1, 0, 0, 1, 1, 0, 0)], []) for sb in found]

    async def collect_metrics(self, found: list[Sandbox], **parts: bool) -> list[MetricsSample]:
        self.calls.append(len(found))
        samples = []
        for sb in found:
            c = container(sb)
            samples.append(
                MetricsSample(sb, [Interface("eth0", 1, 1, 0, 0, 1, 1, 0, 0)], [ContainerSample(c, FULL, None)])
            )
        return samples


class Servicer(StatsServicer):
    def __init__(self, n: int) -> None:
        self.config = from_dict({"stats": {"included_pod_metrics": ["all"]}})
        pods = [sandbox(i) for i in range(n)]
        self.pods = FakePods(pods)  # type: ignore[assignment]
        self.containers = FakeContainers([container(sb) for sb in pods])  # type: ignore[assignment]
        self.collector = FakeCollector()
        self.pod_stats = self.collector  # type: ignore[assignment]

    def _layers_dir(self) -> str:
        return "/var/lib/crid/containers"


async def _drain(stream: Any) -> list[Any]:
    return [m async for m in stream]


@pytest.mark.parametrize(
    ("rpc", "request_", "field", "chunk"),
    [
        ("StreamPodSandboxStats", pb.StreamPodSandboxStatsRequest(), "pod_sandbox_stats", stats_service.STATS_CHUNK),
        ("StreamContainerStats", pb.StreamContainerStatsRequest(), "container_stats", stats_service.STATS_CHUNK),
        ("StreamPodSandboxMetrics", pb.StreamPodSandboxMetricsRequest(), "pod_sandbox_metrics",
         stats_service.METRICS_CHUNK),
    ],
)  # fmt: skip
def test_streams_send_bounded_chunks(rpc: str, request_: Any, field: str, chunk: int) -> None:
    s = Servicer(1000)
    messages = asyncio.run(_drain(getattr(s, rpc)(request_, None)))
    assert len(messages) == math.ceil(1000 / chunk) > 1
    items = [x for m in messages for x in getattr(m, field)]
    ids = [getattr(x, "pod_sandbox_id", "") or x.attributes.id for x in items]
    assert len(ids) == 1000 == len(set(ids))  # each object exactly once
    assert max(m.ByteSize() for m in messages) < 1 << 20  # far below the 16 MiB gRPC limit
    if rpc != "StreamContainerStats":  # collected a chunk at a time, not all 1,000 at once
        assert s.collector.calls == [chunk] * (1000 // chunk)


def test_list_is_the_stream_in_one_message() -> None:
    s = Servicer(30)
    listed = asyncio.run(s.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), None)).stats
    streamed = asyncio.run(_drain(s.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest(), None)))
    assert [x.attributes.id for m in streamed for x in m.pod_sandbox_stats] == [x.attributes.id for x in listed]
    metrics = asyncio.run(s.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest(), None)).pod_metrics
    assert len(metrics) == 30 and all(m.container_metrics for m in metrics)


# --- UpdatePodSandboxResources -------------------------------------------------------------------


def test_validate_pod_resources() -> None:
    pod_resources.validate(pb.LinuxContainerResources(cpu_period=100_000, cpu_quota=-1, cpuset_cpus="0-3,6"), "r")
    for bad in (
        pb.LinuxContainerResources(cpu_period=10),
        pb.LinuxContainerResources(cpu_quota=-5),
        pb.LinuxContainerResources(cpu_shares=1),
        pb.LinuxContainerResources(memory_limit_in_bytes=-1),
        pb.LinuxContainerResources(cpuset_mems="0-"),
        pb.LinuxContainerResources(unified={"../x": "1"}),
    ):
        with pytest.raises(InvalidArgument):
            pod_resources.validate(bad, "resources")


def test_pod_limits_are_the_sum_with_the_overhead() -> None:
    res = pb.LinuxContainerResources(memory_limit_in_bytes=100, cpu_quota=50_000, cpu_period=100_000, cpu_shares=512)
    over = pb.LinuxContainerResources(memory_limit_in_bytes=10, cpu_quota=5_000, cpu_period=50_000, cpu_shares=10)
    assert pod_resources.limits(over, res) == {
        "memory": 110,
        "cpu_period": 100_000,
        "cpu_quota": 60_000,
        "cpu_shares": 522,
    }
    # no limit on the containers: none on the pod, whatever the overhead
    assert pod_resources.limits(over, pb.LinuxContainerResources())["memory"] == 0
    assert pod_resources.limits(over, pb.LinuxContainerResources())["cpu_quota"] == 0


def test_limits_go_only_to_cgroups_crid_created(tmp_path: Path) -> None:
    for h in ("memory", "cpu", "pids"):
        (tmp_path / h / "kubepods" / "pod1").mkdir(parents=True)
    owned = [str(tmp_path / "memory" / "kubepods" / "pod1"), str(tmp_path / "cpu" / "kubepods" / "pod1")]
    lim = {"memory": 0, "cpu_period": 100_000, "cpu_quota": 20_000, "cpu_shares": 0}
    writes = dict(pod_resources.writes("/kubepods/pod1", owned[:1], lim, str(tmp_path)))
    assert writes == {str(tmp_path / "memory/kubepods/pod1/memory.limit_in_bytes"): "-1"}  # cpu is kubelet's here
    writes = dict(pod_resources.writes("/kubepods/pod1", owned, lim, str(tmp_path)))
    assert writes[str(tmp_path / "cpu/kubepods/pod1/cpu.cfs_quota_us")] == "20000"
    v2 = tmp_path / "v2"
    (v2 / "kubepods" / "pod1").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    lim = {"memory": 1 << 20, "cpu_period": 100_000, "cpu_quota": 0, "cpu_shares": 1024}
    got = dict(pod_resources.writes("/kubepods/pod1", [str(v2 / "kubepods/pod1")], lim, str(v2)))
    assert got == {
        str(v2 / "kubepods/pod1/memory.max"): str(1 << 20),
        str(v2 / "kubepods/pod1/cpu.max"): "max 100000",
        str(v2 / "kubepods/pod1/cpu.weight"): "39",
    }


def test_recorded_resources_round_trip() -> None:
    sb = sandbox()
    assert pod_resources.describe(sb) == {"overhead": {}, "resources": {}, "updated": False}
    pod_resources.record(
        sb, pb.LinuxContainerResources(cpu_shares=2), pb.LinuxContainerResources(memory_limit_in_bytes=5)
    )
    overhead, resources = pod_resources.current(sb)
    assert (overhead.cpu_shares, resources.memory_limit_in_bytes) == (2, 5)
    assert pod_resources.describe(sb)["resources"] == {"memory_limit_in_bytes": "5"}
    assert sb.data()["pod_resources"] == sb.pod_resources  # persisted with the record
