"""Pod stats, CRI metrics and pod-level resources end to end: a real crid runs
busybox pods (with and without a cgroup of their own); each test makes the
pods do something (burn CPU, fill memory, send packets) and checks it in
what the RPCs report, and in the cgroup files."""

import json
import os
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from cri.server.pod_metrics import DESCRIPTORS
from tests.e2e import test_containers as containers_e2e
from tests.e2e.container_pod import Pod, pod_name
from tests.e2e.harness import CridProcess
from tests.support.cni_net import Network

env = containers_e2e.env  # the daemon, registry and network of this module too
CG = Path("/sys/fs/cgroup")
Env = tuple[CridProcess, str, Network]


def _parent() -> str:
    return f"/crid-e2e-{secrets.token_hex(4)}/pod-{secrets.token_hex(2)}"


@pytest.fixture
def cg_pod(env: Env, request: pytest.FixtureRequest) -> Iterator[Pod]:
    """A pod with a cgroup of its own (crid creates it, as kubelet would have)."""
    d, image, _ = env
    p = Pod(d, image, pod_name(request), cgroup_parent=_parent())
    yield p
    p.remove()


def pod_stats(d: CridProcess, pod_id: str) -> pb.PodSandboxStats:
    stats: pb.PodSandboxStats = d.client.runtime.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=pod_id)).stats
    return stats


def verbose_info(d: CridProcess, pod_id: str) -> dict[str, Any]:
    resp = d.client.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    info: dict[str, Any] = json.loads(resp.info["info"])
    return info


def test_cpu_burner_shows_rising_nano_cores(cg_pod: Pod) -> None:
    cid = cg_pod.run("burn", ["sh", "-c", "while :; do :; done"])
    time.sleep(0.5)
    first = pod_stats(cg_pod.d, cg_pod.id)
    time.sleep(1.0)
    second = pod_stats(cg_pod.d, cg_pod.id)
    assert second.attributes.id == cg_pod.id and second.attributes.metadata.name == cg_pod.config.metadata.name
    cpu = second.linux.cpu
    assert cpu.usage_core_nano_seconds.value > first.linux.cpu.usage_core_nano_seconds.value > 0
    assert cpu.usage_nano_cores.value > 3 * 10**8  # a busy loop: most of a core, between the two samples
    assert cpu.timestamp > first.linux.cpu.timestamp
    assert [c.attributes.id for c in second.linux.containers] == [cid]
    assert second.linux.containers[0].cpu.usage_core_nano_seconds.value > 0
    assert second.linux.process.process_count.value >= 2  # sh, and the loop's subshell at times
    if (CG / "unified").is_dir():  # hybrid host: PSI of the pod's cgroup from the v2 mount
        assert second.linux.cpu.HasField("psi") and second.linux.memory.HasField("psi")
    rel = cg_pod.config.linux.cgroup_parent
    usage = int((CG / "cpuacct" / rel.strip("/") / "cpuacct.usage").read_text())
    assert usage >= cpu.usage_core_nano_seconds.value


FILL = ["sh", "-c", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=64 2>/dev/null; echo filled; sleep 600"]


def _wait_filled(pod: Pod, name: str) -> None:
    deadline = time.monotonic() + 20
    while "filled" not in (pod.logs / f"{name}.log").read_text():
        assert time.monotonic() < deadline, "the container did not fill its memory"
        time.sleep(0.1)


def test_allocating_container_shows_memory(cg_pod: Pod) -> None:
    cg_pod.run("fill", FILL)
    _wait_filled(cg_pod, "fill")
    mem = pod_stats(cg_pod.d, cg_pod.id).linux.memory
    assert mem.usage_bytes.value >= 64 << 20
    assert mem.working_set_bytes.value >= 60 << 20  # tmpfs pages are not inactive file cache
    assert mem.page_faults.value > 0 and mem.rss_bytes.value >= 0
    assert not mem.HasField("available_bytes")  # the pod cgroup has no limit
    rel = cg_pod.config.linux.cgroup_parent.strip("/")
    assert mem.usage_bytes.value <= int((CG / "memory" / rel / "memory.max_usage_in_bytes").read_text())


def test_pod_without_cgroup_sums_its_containers(env: Env) -> None:
    d, image, _ = env
    pod = Pod(d, image, "nocg")
    try:
        pod.run("fill", FILL)
        pod.run("idle", ["sleep", "600"])
        _wait_filled(pod, "fill")
        stats = pod_stats(d, pod.id)
        assert {c.attributes.metadata.name for c in stats.linux.containers} == {"fill", "idle"}
        total = sum(c.memory.usage_bytes.value for c in stats.linux.containers)
        assert stats.linux.memory.usage_bytes.value >= 64 << 20
        assert abs(stats.linux.memory.usage_bytes.value - total) < 8 << 20  # read a moment apart
        assert stats.linux.process.process_count.value >= 2
        assert not stats.linux.cpu.HasField("psi")  # pressure does not add up
    finally:
        pod.remove()


def _eth0(stats: pb.PodSandboxStats) -> pb.NetworkInterfaceUsage:
    net = stats.linux.network
    assert net.default_interface.name == "eth0" and net.timestamp > 0
    assert "lo" not in [i.name for i in net.interfaces]
    return net.default_interface


def pod_ip(d: CridProcess, pod_id: str) -> str:
    status = d.client.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id)).status
    return str(status.network.ip)


def test_ping_between_pods_shows_on_eth0(env: Env, cg_pod: Pod) -> None:
    d, image, _ = env
    # pod to pod over the bridge: unlike the gateway, immune to another run's bridge with this subnet
    peer = Pod(d, image, "peer")
    try:
        before = _eth0(pod_stats(d, cg_pod.id))
        peer_before = _eth0(pod_stats(d, peer.id))
        code, out = cg_pod.output("ping", ["ping", "-c", "5", "-i", "0.2", "-s", "1200", pod_ip(d, peer.id)])
        assert code == 0, out
        after = _eth0(pod_stats(d, cg_pod.id))
        assert after.tx_bytes.value - before.tx_bytes.value >= 5 * 1200
        assert after.rx_bytes.value - before.rx_bytes.value >= 5 * 1200  # the replies
        assert after.rx_errors.value == 0 and after.tx_errors.value == 0
        peer_after = _eth0(pod_stats(d, peer.id))
        assert peer_after.rx_bytes.value - peer_before.rx_bytes.value >= 5 * 1200  # each pod its own counters
    finally:
        peer.remove()


def test_host_network_pod_has_no_network_stats(env: Env) -> None:
    d, image, _ = env
    ns = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
    pod = Pod(d, image, "hostnet", security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns))
    try:
        assert not pod_stats(d, pod.id).linux.HasField("network")
    finally:
        pod.remove()


def test_list_filters_and_streams(env: Env) -> None:
    d, image, _ = env
    pods = [Pod(d, image, f"flt{i}") for i in range(3)]
    labelled = [Pod(d, image, f"lab{i}") for i in range(2)]
    try:
        for p in labelled:
            p.run("c", ["sleep", "600"])
        rt = d.client.runtime
        everything = {s.attributes.id for s in rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats}
        assert {p.id for p in pods + labelled} <= everything
        one = pb.PodSandboxStatsFilter(id=labelled[0].id[:13])
        assert [s.attributes.id for s in rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(filter=one)).stats] == [
            labelled[0].id
        ]
        by_label = pb.PodSandboxStatsFilter(label_selector={"no-such": "label"})
        assert not rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(filter=by_label)).stats
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pods[0].id))
        listed = {s.attributes.id for s in rt.ListPodSandboxStats(pb.ListPodSandboxStatsRequest()).stats}
        assert pods[0].id not in listed and pods[1].id in listed  # a stopped pod has no stats
        with pytest.raises(grpc.RpcError) as err:
            pod_stats(d, pods[0].id)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        streamed = [
            s.attributes.id
            for m in rt.StreamPodSandboxStats(pb.StreamPodSandboxStatsRequest())
            for s in m.pod_sandbox_stats
        ]
        assert set(streamed) == listed and len(streamed) == len(listed)
        cstreamed = [
            s.attributes.id
            for m in rt.StreamContainerStats(pb.StreamContainerStatsRequest())
            for s in m.container_stats
        ]
        clisted = [s.attributes.id for s in rt.ListContainerStats(pb.ListContainerStatsRequest()).stats]
        assert sorted(cstreamed) == sorted(clisted) and len(clisted) >= 2
    finally:
        for p in pods + labelled:
            p.remove()


# --- CRI metrics -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minimal_metrics(env: Env, e2e_base: Path) -> Iterator[CridProcess]:
    """A second daemon with CRI-O's default, no metric groups, on the same network as ``env``."""
    settings = {**env[2].settings(), "stats": {"included_pod_metrics": []}}
    d = CridProcess(Path(tempfile.mkdtemp(prefix="met", dir=e2e_base)), settings=settings).start()
    try:
        yield d
    finally:
        d.stop()


def test_no_metric_groups_is_last_seen_only(minimal_metrics: CridProcess) -> None:
    descs = minimal_metrics.client.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()).descriptors
    assert [x.name for x in descs] == ["container_last_seen"]


def descriptors(d: CridProcess) -> dict[str, list[str]]:
    found = d.client.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()).descriptors
    return {x.name: list(x.label_keys) for x in found}


def container_metrics(d: CridProcess, pod_id: str, cid: str) -> list[tuple[str, dict[str, str], int]]:
    """(name, labels, value) of each sample of one container, checked against its descriptor."""
    descs = descriptors(d)
    (pm,) = [m for m in d.client.runtime.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics
             if m.pod_sandbox_id == pod_id]  # fmt: skip
    (cm,) = [c for c in pm.container_metrics if c.container_id == cid]
    for m in cm.metrics:
        assert m.name in descs and len(m.label_values) == len(descs[m.name]), m
    return [(m.name, dict(zip(descs[m.name], m.label_values, strict=True)), m.value.value) for m in cm.metrics]


def fs_source(path: str) -> str:
    """The device findmnt names for the filesystem of ``path`` (without a btrfs subvolume suffix)."""
    out = subprocess.run(["findmnt", "-n", "-o", "SOURCE", "-T", path], capture_output=True, text=True, check=True)
    return out.stdout.strip().split("[")[0]


def test_default_metrics_agree_with_descriptors_and_the_pod(env: Env) -> None:
    d, image, network = env  # the default config: every group
    assert set(descriptors(d)) == {x.name for x in DESCRIPTORS}
    pod = Pod(d, image, "metrics", cgroup_parent=_parent())
    try:
        cid = pod.run("fill", FILL)
        _wait_filled(pod, "fill")
        # 4 MiB in the writable layer
        script = "mkdir /data && dd if=/dev/zero of=/data/blob bs=1M count=4 && touch /data/f1 /data/f2 /data/f3; sync"
        assert pod.exec(cid, ["sh", "-c", script]).exit_code == 0
        # sent packets count on eth0 whether or not the gateway answers
        pod.output("ping", ["ping", "-c", "3", "-i", "0.2", f"{network.subnet_prefix}.1"])
        rt = d.client.runtime
        listed = [m for m in rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics
                  if m.pod_sandbox_id == pod.id]  # fmt: skip
        descs = descriptors(d)
        (pm,) = listed
        for m in pm.metrics:
            assert m.name in descs and len(m.label_values) == len(descs[m.name]), m
        net = {dict(zip(descs[m.name], m.label_values, strict=True))["interface"]: m.value.value
               for m in pm.metrics if m.name == "container_network_transmit_bytes_total"}  # fmt: skip
        assert net.get("eth0", 0) > 0 and "lo" not in net
        got = {name: (labels, value) for name, labels, value in container_metrics(d, pod.id, cid)}
        labels, usage = got["container_memory_usage_bytes"]
        assert labels == {"id": cid, "image": image, "namespace": "e2e", "pod": "metrics", "container": "fill"}
        cgroup = CG / "memory" / pod.config.linux.cgroup_parent.strip("/") / cid / "memory.usage_in_bytes"
        assert abs(usage - int(cgroup.read_text())) < 4 << 20 and usage >= 64 << 20
        assert abs(got["container_last_seen"][1] - time.time()) < 30
        assert got["container_processes"][1] >= 1  # sh, which execs sleep
        assert got["container_start_time_seconds"][1] <= time.time()
        if (CG / "unified").is_dir():
            assert "container_pressure_memory_waiting_seconds_total" in got
        # disk: the writable layer's filesystem, and what the layer uses
        vfs, device = os.statvfs(d.root), fs_source(d.root)
        assert got["container_fs_limit_bytes"] == ({**labels, "device": device}, vfs.f_blocks * vfs.f_frsize)
        assert got["container_fs_inodes_total"][1] == vfs.f_files
        assert abs(got["container_fs_inodes_free"][1] - vfs.f_ffree) < 10_000  # the machine's other users
        layer = rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats.writable_layer.used_bytes.value
        fs_usage = got["container_fs_usage_bytes"][1]
        assert fs_usage >= 4 << 20 and abs(fs_usage - layer) < 1 << 20  # the walk ContainerStats makes too
        streamed = [
            m for r in rt.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest()) for m in r.pod_sandbox_metrics
        ]
        assert sorted(m.pod_sandbox_id for m in streamed) == sorted(
            m.pod_sandbox_id for m in rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics
        )
    finally:
        pod.remove()


def _whole_disk(path: str) -> tuple[int, int] | None:
    """MAJ, MIN of the disk holding ``path`` (a partition's disk), None when it is on no block device."""
    dev = os.stat(path).st_dev
    sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not sys_dev.exists():
        return None
    if (sys_dev / "partition").exists():
        sys_dev = sys_dev.resolve().parent
    major, minor = (sys_dev / "dev").read_text().split(":")
    return int(major), int(minor)


def test_disk_io_metrics_count_direct_io(cg_pod: Pod) -> None:
    d = cg_pod.d
    disk = _whole_disk(d.root)
    if disk is None or not (CG / "blkio").is_dir():
        pytest.skip("the writable layer is on no block device, or no cgroup v1 blkio here")
    cid = cg_pod.run("io", ["sleep", "600"])
    blkio = CG / "blkio" / cg_pod.config.linux.cgroup_parent.strip("/") / cid
    # v1 counts a device's I/O only once blk-throttle is active on it: a limit no test reaches activates it
    for f in ("blkio.throttle.read_bps_device", "blkio.throttle.write_bps_device"):
        (blkio / f).write_text(f"{disk[0]}:{disk[1]} {1 << 40}\n")
    script = "dd if=/dev/zero of=/blob bs=1M count=8 oflag=direct && dd if=/blob of=/dev/null bs=1M iflag=direct"
    assert cg_pod.exec(cid, ["sh", "-c", script]).exit_code == 0
    samples = container_metrics(d, cg_pod.id, cid)
    file_bytes = (blkio / "blkio.throttle.io_service_bytes_recursive").read_text()
    name = "/dev/" + Path(f"/sys/dev/block/{disk[0]}:{disk[1]}").resolve().name
    written = {s[0]: s[2] for s in samples if s[1].get("device") == name and s[0].startswith("container_fs_w")}
    assert written["container_fs_writes_bytes_total"] >= 8 << 20 and written["container_fs_writes_total"] >= 1
    assert f"{disk[0]}:{disk[1]} Write {written['container_fs_writes_bytes_total']}" in file_bytes
    reads = [s for s in samples if s[0] == "container_fs_reads_bytes_total" and s[1]["device"] == name]
    assert reads and reads[0][2] >= 8 << 20
    blkio_labels = {"device": name, "major": str(disk[0]), "minor": str(disk[1])}
    ops = {labels["operation"]: value for metric, labels, value in samples
           if metric == "container_blkio_device_usage_total" and blkio_labels.items() <= labels.items()}  # fmt: skip
    assert ops["Write"] == written["container_fs_writes_bytes_total"] and ops["Total"] >= ops["Read"] + ops["Write"]


# --- UpdatePodSandboxResources ------------------------------------------------------------------

MiB = 1 << 20


def test_update_pod_resources_sets_the_limit_and_survives_a_restart(env: Env) -> None:
    d, image, _ = env
    parent = _parent()
    pod = Pod(d, image, "resize", cgroup_parent=parent)
    rel = parent.strip("/")
    try:
        res = pb.LinuxContainerResources(
            memory_limit_in_bytes=256 * MiB, cpu_quota=50_000, cpu_period=100_000, cpu_shares=512
        )
        overhead = pb.LinuxContainerResources(memory_limit_in_bytes=16 * MiB, cpu_shares=10)
        d.client.runtime.UpdatePodSandboxResources(
            pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id=pod.id, resources=res, overhead=overhead)
        )
        assert int((CG / "memory" / rel / "memory.limit_in_bytes").read_text()) == 272 * MiB
        assert int((CG / "cpu" / rel / "cpu.cfs_quota_us").read_text()) == 50_000
        assert int((CG / "cpu" / rel / "cpu.shares").read_text()) == 522
        mem = pod_stats(d, pod.id).linux.memory
        assert 0 < mem.available_bytes.value <= 272 * MiB  # the pod now has a limit
        recorded = verbose_info(d, pod.id)["podResources"]
        assert recorded["updated"] and recorded["resources"]["memory_limit_in_bytes"] == str(256 * MiB)
        assert d.stop() == 0
        d.start()
        assert verbose_info(d, pod.id)["podResources"] == recorded
        with pytest.raises(grpc.RpcError) as err:
            d.client.runtime.UpdatePodSandboxResources(
                pb.UpdatePodSandboxResourcesRequest(
                    pod_sandbox_id=pod.id, resources=pb.LinuxContainerResources(cpu_period=10)
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert int((CG / "memory" / rel / "memory.limit_in_bytes").read_text()) == 272 * MiB  # refused: untouched
        with pytest.raises(grpc.RpcError) as err:
            d.client.runtime.UpdatePodSandboxResources(pb.UpdatePodSandboxResourcesRequest(pod_sandbox_id="nosuchpod"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        pod.remove()


def test_update_pod_resources_leaves_a_kubelet_cgroup_alone(env: Env) -> None:
    d, image, _ = env
    parent = _parent()
    rel = parent.strip("/")
    made = [CG / h / rel for h in os.listdir(CG) if (CG / h).is_dir() and not (CG / h).is_symlink()]
    for path in made:  # kubelet made the pod cgroup before RunPodSandbox
        path.mkdir(parents=True)
    try:
        pod = Pod(d, image, "kubeletcg", cgroup_parent=parent)
        try:
            before = (CG / "memory" / rel / "memory.limit_in_bytes").read_text()
            d.client.runtime.UpdatePodSandboxResources(
                pb.UpdatePodSandboxResourcesRequest(
                    pod_sandbox_id=pod.id, resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 * MiB)
                )
            )
            assert (CG / "memory" / rel / "memory.limit_in_bytes").read_text() == before
            assert verbose_info(d, pod.id)["podResources"]["resources"]["memory_limit_in_bytes"] == str(64 * MiB)
        finally:
            pod.remove()
    finally:
        for path in made:
            path.rmdir()
            path.parent.rmdir()
