"""The benchmark harness runs every workload once, with tiny counts, against a
real crid and a real containerd, and writes its result files."""

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from benchmarks.core import REGISTRY, CriTarget, Params, cri_workload
from benchmarks.harness import Options, Results, run, select

HOST_CONTAINERD_DIRS = ("/run/containerd", "/var/lib/containerd", "/opt/containerd")


@pytest.fixture
def workdir(e2e_base: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="b", dir=e2e_base))


def _processes_under(path: Path) -> list[str]:
    return [
        " ".join(p.info["cmdline"])
        for p in psutil.process_iter(["cmdline"])
        if p.info["cmdline"] and any(str(path) in a for a in p.info["cmdline"])
    ]


def test_every_workload_once(workdir: Path) -> None:
    host_dirs_before = {d for d in HOST_CONTAINERD_DIRS if os.path.exists(d)}
    results: Results = run(Options(results_dir=workdir / "results", count=2, runs=1, workdir=workdir))

    assert {r.workload.name for r in results.workloads} == set(REGISTRY)
    for kind in ("json", "markdown", "samples", "plot"):
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
    for name in ("version", "status", "rss_idle"):  # what both runtimes do today
        assert all(o.status == "ok" for o in by_name[name].outcomes.values()), name
    assert by_name["floor_run"].outcomes["runc"].status == "ok"
    assert by_name["list_containers_0"].outcomes["containerd"].status == "ok"
    assert by_name["pod_lifecycle"].outcomes["containerd"].reason.startswith("needs the test images")

    data = json.loads(results.files["json"].read_text())
    assert data["machine"]["cores"] == os.cpu_count()
    assert {"runc", "crun", "conmon", "containerd", "crid"} <= set(data["versions"])
    version = data["workloads"]["version"]
    assert version["results"]["crid"]["count"] == 2
    assert version["results"]["containerd"]["p50"] > 0
    assert version["ratio_p50_crid_containerd"] > 0
    markdown = results.files["markdown"].read_text()
    assert "| CRI Version round trip |" in markdown and "runc run" in markdown
    assert results.files["plot"].read_bytes().startswith(b"\x89PNG")

    # containerd kept to its temporary dirs, and everything was stopped and removed
    assert {d for d in HOST_CONTAINERD_DIRS if os.path.exists(d)} == host_dirs_before
    assert _processes_under(workdir) == []
    assert os.listdir(workdir) == ["results"]


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
    assert os.listdir(workdir) == []


def test_unknown_workload_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        select(["no_such_workload"])
