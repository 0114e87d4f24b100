"""Pod stats, CRI metrics and pod-level resources end to end: a real crid runs
busybox pods (with and without a cgroup of their own); each test makes the
pods do something (burn CPU, fill memory, send packets) and checks it in
what the RPCs report, and in the cgroup files."""

import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e import test_containers as containers_e2e
from tests.e2e.harness import CridProcess
from tests.e2e.test_containers import Pod, pod_name
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
def all_metrics(env: Env, e2e_base: Path) -> Iterator[CridProcess]:
    """A second daemon, every metric group on, on the same registry and network as ``env``."""
    _, image, network = env
    settings = {**network.settings(), "stats": {"included_pod_metrics": ["all"]}}
    d = CridProcess(Path(tempfile.mkdtemp(prefix="met", dir=e2e_base)), settings=settings).start()
    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    try:
        yield d
    finally:
        for p in d.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            d.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id))
            d.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))
        d.stop()


def test_default_metrics_are_last_seen_only(env: Env) -> None:
    d = env[0]
    descs = d.client.runtime.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()).descriptors
    assert [x.name for x in descs] == ["container_last_seen"]  # CRI-O's default: included_pod_metrics = []


def test_metrics_agree_with_descriptors_and_the_pod(env: Env, all_metrics: CridProcess) -> None:
    _, image, network = env
    d = all_metrics
    pod = Pod(d, image, "metrics", cgroup_parent=_parent())
    try:
        cid = pod.run("fill", FILL)
        _wait_filled(pod, "fill")
        # sent packets count on eth0 whether or not the gateway answers
        pod.output("ping", ["ping", "-c", "3", "-i", "0.2", f"{network.subnet_prefix}.1"])
        rt = d.client.runtime
        descs = {
            x.name: list(x.label_keys) for x in rt.ListMetricDescriptors(pb.ListMetricDescriptorsRequest()).descriptors
        }
        wanted = {
            "container_cpu_usage_seconds_total", "container_memory_working_set_bytes", "container_processes",
            "container_network_receive_bytes_total", "container_spec_memory_limit_bytes", "container_last_seen",
            "container_oom_events_total", "container_pressure_cpu_waiting_seconds_total",
        }  # fmt: skip
        assert wanted <= set(descs)
        listed = [
            m
            for m in rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics
            if m.pod_sandbox_id == pod.id
        ]
        assert len(listed) == 1
        pm = listed[0]
        for m in [*pm.metrics, *(x for c in pm.container_metrics for x in c.metrics)]:
            assert m.name in descs and len(m.label_values) == len(descs[m.name]), m
        net = {dict(zip(descs[m.name], m.label_values, strict=True))["interface"]: m.value.value
               for m in pm.metrics if m.name == "container_network_transmit_bytes_total"}  # fmt: skip
        assert net.get("eth0", 0) > 0 and "lo" not in net
        (cm,) = [c for c in pm.container_metrics if c.container_id == cid]
        got = {m.name: (dict(zip(descs[m.name], m.label_values, strict=True)), m.value.value) for m in cm.metrics}
        labels, usage = got["container_memory_usage_bytes"]
        assert labels == {"id": cid, "image": image, "namespace": "e2e", "pod": "metrics", "container": "fill"}
        cgroup = CG / "memory" / pod.config.linux.cgroup_parent.strip("/") / cid / "memory.usage_in_bytes"
        assert abs(usage - int(cgroup.read_text())) < 4 << 20 and usage >= 64 << 20
        assert abs(got["container_last_seen"][1] - time.time()) < 30
        assert got["container_processes"][1] >= 1  # sh, which execs sleep
        assert got["container_start_time_seconds"][1] <= time.time()
        if (CG / "unified").is_dir():
            assert "container_pressure_memory_waiting_seconds_total" in got
        streamed = [
            m for r in rt.StreamPodSandboxMetrics(pb.StreamPodSandboxMetricsRequest()) for m in r.pod_sandbox_metrics
        ]
        assert sorted(m.pod_sandbox_id for m in streamed) == sorted(
            m.pod_sandbox_id for m in rt.ListPodSandboxMetrics(pb.ListPodSandboxMetricsRequest()).pod_metrics
        )
    finally:
        pod.remove()


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
