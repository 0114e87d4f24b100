"""The benchmark harness runs every workload once, with tiny counts, against a
real crid and a real containerd, and writes its result files."""

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from benchmarks.core import REGISTRY, CriTarget, ImageSizes, Params, cri_workload
from benchmarks.harness import Options, Results, run, select

HOST_CONTAINERD_DIRS = ("/run/containerd", "/var/lib/containerd", "/opt/containerd")
CONTAINER_WORKLOADS = (
    "container_create_start",
    "container_lifecycle.total",
    "container_lifecycle.stop",
    "container_lifecycle.remove",
    "pod_container_start",
    "list_containers_100",
    "monitor_rss",
)


@pytest.fixture
def workdir(e2e_base: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="b", dir=e2e_base))


def _processes_under(path: Path) -> list[str]:
    return [
        " ".join(p.info["cmdline"])
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and any(str(path) in a for a in p.info["cmdline"])
    ]


# tiny test images: a 4 MB big image in 3 layers, 200 small files
TINY = ImageSizes(big_bytes=4_000_000, big_layers=3, big_file_bytes=1 << 20, small_files=200)


def _links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def test_every_workload_once(workdir: Path) -> None:
    host_dirs_before = {d for d in HOST_CONTAINERD_DIRS if os.path.exists(d)}
    options = Options(results_dir=workdir / "results", count=2, runs=1, workdir=workdir, sizes=TINY)
    results: Results = run(options)

    assert {r.workload.parent or r.workload.name for r in results.workloads} == set(REGISTRY)
    for kind in ("json", "markdown", "samples", "plot", "pull"):
        assert results.files[kind].stat().st_size > 0, kind
    assert results.failed() == []
    for r in results.workloads:
        assert set(r.outcomes) == set(r.workload.targets)
        for target, outcome in r.outcomes.items():
            if outcome.status == "ok":
                assert len(outcome.samples) > 0, (r.workload.name, target)
            else:
                assert outcome.status == "not supported"
                assert outcome.reason, (r.workload.name, target)

    by_name = {r.workload.name: r for r in results.workloads}
    both = (
        "version",
        "status",
        "rss_idle",
        "image_pull_big.mbps",
        "image_pull_big.seconds",
        "image_pull_small.mbps",
        "list_during_pull.images",
        "list_during_pull.images_floor",
        "pod_lifecycle.run",
        "pod_lifecycle.stop",
        "pod_lifecycle.remove",
        "pod_lifecycle_parallel.run",
        "pod_lifecycle_parallel.remove",
        "rss_20_pods.daemon",
        "rss_20_pods.per_pod_rss",
        "version_floor.own",  # call by call in turns with the bare server
        "version_floor.floor",
        "list_containers_100_floor.own",
        "list_containers_100_floor.floor",
        "rss_idle_floor",
        "rss_idle_libraries_floor",
        "node.run_110",
        "node.list_containers_110",
        "node.exec_110",
        "node.floor_create_start_110",
        "node.floor_exec_110",
        "node.floor_network_add_110",
        "node.floor_network_del_110",
        "node.floor_stop_110",
        "node.floor_list_pods_110",
        "node.floor_list_containers_110",
        "node.cpu_poll",
        "node.restart_lists",
        "floor_own_spec.runc",  # each runtime's own config.json, run by hand
        "floor_own_spec.monitor",
        "floor_own_spec.cri",
    )
    for name in both:  # what both runtimes do today
        assert all(o.status == "ok" for o in by_name[name].outcomes.values()), (name, by_name[name].outcomes)
    assert by_name["floor_run"].outcomes["runc"].status == "ok"
    assert by_name["floor_create_start"].outcomes["runc"].status == "ok"
    assert by_name["floor_conmon_create_start"].outcomes["runc"].status == "ok"  # crid's conmon line, by hand
    assert by_name["floor_exec"].outcomes["runc"].status == "ok"
    assert by_name["floor_exec_sealed"].outcomes["runc"].status == "ok"  # the copy crid runs, by hand
    for name in ("version_floor", "list_containers_100_floor"):  # as many calls of the runtime as of the floor
        own, floor = (by_name[f"{name}.{row}"].outcomes["crid"].samples for row in ("own", "floor"))
        assert len(own) == len(floor) == 2, name
    # the floor server with crid's libraries imported is the bare one and those libraries
    bare, with_libraries = (by_name[n].outcomes["crid"].samples for n in ("rss_idle_floor", "rss_idle_libraries_floor"))
    assert min(with_libraries) > max(bare) + 2 * 1024 * 1024
    floors = [r for r in results.workloads if r.workload.parent == "pull_floor"]
    assert len(floors) == 10 and all(r.outcomes["machine"].status == "ok" for r in floors)
    containerd_only = ("list_containers_0", "list_during_pull.containers", *CONTAINER_WORKLOADS)
    for name in containerd_only:  # crid: as soon as it has containers
        assert by_name[name].outcomes["containerd"].status == "ok", name
    # the pulls are timed pulls of what was pushed: MB/s = compressed bytes / seconds
    big = by_name["image_pull_big.mbps"].outcomes["crid"].samples
    seconds = by_name["image_pull_big.seconds"].outcomes["crid"].samples
    assert len(big) == len(seconds) == 2
    assert big[0] * seconds[0] == pytest.approx(4.0, rel=0.02)  # 4 MB plus manifest and config
    # containerd's pods cost a shim and a pause process each; crid's a pod without a shared PID namespace none
    assert min(by_name["rss_20_pods.per_pod_rss"].outcomes["containerd"].samples) > 1e6

    data = json.loads(results.files["json"].read_text())
    assert data["machine"]["cores"] == os.cpu_count()
    assert {"runc", "crun", "conmon", "containerd", "crid"} <= set(data["versions"])
    assert data["options"]["test_images"]["big"]["compressed_bytes"] > 4_000_000
    version = data["workloads"]["version"]
    assert version["results"]["crid"]["count"] == 2
    assert version["results"]["containerd"]["p50"] > 0
    assert version["ratio_p50_crid_containerd"] > 0
    markdown = results.files["markdown"].read_text()
    assert "| CRI Version round trip |" in markdown and "runc run" in markdown
    assert "| RunPodSandbox, 10 at a time |" in markdown and "/bench/big:1" in markdown
    assert set(data["pull_floor_ratios"]) == {"big", "small"} and data["pull_floor_ratios"]["big"]["crid"] > 0
    assert "Cold pull seconds / floor (p50s): big: crid " in markdown
    assert data["pull_stored_floor_ratios"]["big"]["crid"] > 0  # the floor with the content store's fsync'ed copy
    assert "Cold pull seconds / stored floor (p50s): big: crid " in markdown
    assert results.files["plot"].read_bytes().startswith(b"\x89PNG")
    assert results.files["scaling"].read_bytes().startswith(b"\x89PNG")  # latency against the pod count
    assert "| ListContainers | 1: " in markdown
    assert (workdir / "results" / "logs" / "containerd.log").is_file()

    # containerd kept to its temporary dirs, and everything was stopped and removed
    assert {d for d in HOST_CONTAINERD_DIRS if os.path.exists(d)} == host_dirs_before
    assert _processes_under(workdir) == []
    assert os.listdir(workdir) == ["results"]
    bridges = {net["bridge"] for net in data["options"]["pod_networks"].values()}
    assert len(bridges) == 2 and not bridges & _links()


@pytest.fixture
def interrupting_workload() -> Iterator[str]:
    name = "smoke_interrupt"

    @cri_workload(name, "raises KeyboardInterrupt on containerd")
    def interrupt(t: CriTarget, p: Params) -> list[float]:
        if t.name == "containerd":
            raise KeyboardInterrupt
        return [1.0]

    yield name
    del REGISTRY[name]


def test_ctrl_c_stops_everything(workdir: Path, interrupting_workload: str) -> None:
    with pytest.raises(KeyboardInterrupt):
        run(Options(results_dir=workdir / "results", workloads=[interrupting_workload], workdir=workdir))
    assert _processes_under(workdir) == []
    assert os.listdir(workdir) == ["results"]  # only the daemons' logs, kept for a post-mortem
    assert sorted(os.listdir(workdir / "results" / "logs")) == ["containerd.log", "crid.log"]


def test_unknown_workload_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        select(["no_such_workload"])
