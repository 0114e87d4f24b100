"""Run the selected workloads A/B against their targets and write the results.

``run(Options(...))`` is the Python API (``python -m benchmarks`` and the
smoke test use it): it starts a crid and a containerd daemon on temporary
dirs (only if a CRI workload is selected), builds the floor's busybox bundle
(only if a floor workload is selected), runs each workload for ``runs``
rounds, alternating the targets inside every round (crid, containerd, crid,
containerd, ...) so that drift hits both, then stops everything it started,
also on an exception or Ctrl-C, and writes results.json, results.md,
samples.json and latency.png.
"""

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import grpc

from benchmarks import oci, report
from benchmarks.containerd import ContainerdProcess, delete_oci_containers, kill_processes_mentioning
from benchmarks.core import (
    CRI_TARGETS,
    NEEDS_IMAGES,
    REGISTRY,
    CriTarget,
    NotSupported,
    OciTarget,
    Params,
    TestImages,
    Workload,
)
from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess

DEFAULT_RUNS = 5
IMAGE_RPCS = {"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"}
CGROUP_ROOT = Path("/sys/fs/cgroup")

Status = Literal["ok", "not supported", "failed"]


@dataclass
class Options:
    results_dir: Path
    workloads: list[str] | None = None  # names; None: every registered one
    count: int | None = None  # samples per round; None: each workload's default
    runs: int = DEFAULT_RUNS  # A/B rounds
    workdir: Path | None = None  # where the run's temporary dir is made (default /tmp); it is removed after
    images: TestImages | None = None
    command: str = ""  # shown in the results
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


@dataclass
class Outcome:
    status: Status = "ok"
    samples: list[float] = field(default_factory=list)
    reason: str = ""


@dataclass
class WorkloadResult:
    workload: Workload[Any]
    outcomes: dict[str, Outcome]
    seconds: float = 0.0


@dataclass
class Results:
    machine: dict[str, Any]
    versions: dict[str, str]
    options: dict[str, Any]
    workloads: list[WorkloadResult]
    files: dict[str, Path] = field(default_factory=dict)

    def failed(self) -> list[str]:
        return [
            f"{r.workload.name} on {name}: {o.reason}"
            for r in self.workloads
            for name, o in r.outcomes.items()
            if o.status == "failed"
        ]


def select(names: list[str] | None) -> list[Workload[Any]]:
    import benchmarks.workloads  # noqa: F401  (registers the workloads)

    if names is None:
        return list(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in dict.fromkeys(names)]


def rpc_code(exc: BaseException) -> str | None:
    """The gRPC status code name of a failed call, else None."""
    code = getattr(exc, "code", None)
    if isinstance(exc, grpc.RpcError) and callable(code):
        value = code()
        return str(getattr(value, "name", value))
    return None


def probe(client: CriClient, rpc: str) -> str | None:
    """Call ``rpc`` with an empty request: the UNIMPLEMENTED message if the runtime lacks it, else None.
    Empty requests are rejected before any side effect by a runtime that has the RPC."""
    stub = client.image if rpc in IMAGE_RPCS else client.runtime
    request = getattr(pb, f"{rpc}Request")()
    try:
        getattr(stub, rpc)(request, timeout=10)
    except grpc.RpcError as exc:
        if rpc_code(exc) == "UNIMPLEMENTED":
            return f"{rpc} is UNIMPLEMENTED ({exc.details()})"
    return None


def remove_all_pods(client: CriClient) -> None:
    """Stop and remove every container and pod (best effort): what a workload may have left."""
    rt = client.runtime
    with contextlib.suppress(grpc.RpcError):
        for c in rt.ListContainers(pb.ListContainersRequest(), timeout=30).containers:
            with contextlib.suppress(grpc.RpcError):
                rt.StopContainer(pb.StopContainerRequest(container_id=c.id, timeout=0), timeout=60)
                rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c.id), timeout=60)
    with contextlib.suppress(grpc.RpcError):
        for s in rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
            with contextlib.suppress(grpc.RpcError):
                rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=s.id), timeout=60)
                rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=s.id), timeout=60)


def remove_cgroups(name: str) -> None:
    """rmdir the cgroup ``/name`` and everything below it, in every hierarchy, deepest first."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if hierarchy.is_symlink() or not top.is_dir():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(top)]
        for d in sorted(dirs, key=lambda x: len(x.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()


class Bench:
    """The started targets of one run; ``close()`` stops them all."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.stack = ExitStack()
        self.base = Path(tempfile.mkdtemp(prefix="crid-bench-", dir=str(options.workdir or "/tmp")))
        self.cgroup_name = self.base.name  # the parent of the pods' cgroups
        self.cri: dict[str, CriTarget] = {}
        self.oci: dict[str, OciTarget] = {}
        self.versions: dict[str, str] = {}
        self._probes: dict[tuple[str, str], str | None] = {}
        self.stack.callback(self._remove_base)

    def _remove_base(self) -> None:
        kill_processes_mentioning(str(self.base))
        remove_cgroups(self.cgroup_name)
        shutil.rmtree(self.base, ignore_errors=True)

    def close(self) -> None:
        """Stop everything; a second Ctrl-C or SIGTERM does not cut the teardown short."""
        if threading.current_thread() is not threading.main_thread():
            self.stack.close()
            return
        signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in signals}
        try:
            self.stack.close()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def start_cri(self) -> None:
        log = self.options.log
        crid = CridProcess(self.base, "crid", {"log": {"level": "info", "format": "json"}})
        self.stack.callback(self._stop_crid, crid)
        log(f"starting crid in {crid.dir}")
        crid.start()
        assert crid.proc is not None
        cgroup = f"/{self.cgroup_name}/crid"
        self.cri["crid"] = CriTarget("crid", crid.client, crid.proc.pid, crid.dir, cgroup)

        containerd = ContainerdProcess(self.base)
        self.stack.callback(self._stop_containerd, containerd)
        log(f"starting containerd in {containerd.dir}")
        containerd.start()
        self.cri["containerd"] = CriTarget(
            "containerd", containerd.client, containerd.pid, containerd.dir, f"/{self.cgroup_name}/containerd"
        )
        for name, target in self.cri.items():
            v = target.client.runtime.Version(pb.VersionRequest())
            answer = f"{v.runtime_name} {v.runtime_version} ({v.runtime_api_version})"
            self.versions[f"{name} (CRI Version)"] = answer

    def _stop_crid(self, crid: CridProcess) -> None:
        if "crid" in self.cri:
            remove_all_pods(self.cri.pop("crid").client)
        try:
            crid.stop()
        except Exception:
            crid.kill()

    def _stop_containerd(self, containerd: ContainerdProcess) -> None:
        if "containerd" in self.cri:
            remove_all_pods(self.cri.pop("containerd").client)
        code = containerd.stop()
        if code not in (0, None, -15):
            self.options.log(f"containerd exited with {code}; its log: {containerd.log_path}")

    def start_oci(self) -> None:
        bundle = oci.make_bundle(self.base / "floor" / "bundle")
        for name, binary in oci.BINARIES.items():
            root = self.base / "floor" / f"{name}-root"
            root.mkdir(parents=True, exist_ok=True)
            self.stack.callback(delete_oci_containers, binary, root)
            self.oci[name] = OciTarget(name, binary, root, bundle)

    def target(self, workload: Workload[Any], name: str) -> CriTarget | OciTarget:
        return self.cri[name] if workload.kind == "cri" else self.oci[name]

    def check(self, workload: Workload[Any], target: CriTarget | OciTarget, params: Params) -> None:
        """Raise NotSupported if a needed RPC is UNIMPLEMENTED or a prerequisite is missing."""
        if isinstance(target, CriTarget):
            for rpc in workload.rpcs:
                key = (target.name, rpc)
                if key not in self._probes:
                    self._probes[key] = probe(target.client, rpc)
                reason = self._probes[key]
                if reason is not None:
                    raise NotSupported(reason)
        if workload.needs_images and params.images is None:
            raise NotSupported(NEEDS_IMAGES)

    def run_workload(self, workload: Workload[Any]) -> WorkloadResult:
        opts = self.options
        count = opts.count or workload.count
        outcomes = {name: Outcome() for name in workload.targets}
        t0 = time.monotonic()
        for rnd in range(opts.runs):
            for name in workload.targets:  # A, B, A, B, ...
                outcome = outcomes[name]
                if outcome.status != "ok":
                    continue
                target = self.target(workload, name)
                workdir = self.base / "work" / workload.name / name
                workdir.mkdir(parents=True, exist_ok=True)
                params = Params(count=count, round=rnd, workdir=workdir, images=opts.images)
                try:
                    self.check(workload, target, params)
                    outcome.samples += workload.run(target, params)
                except NotSupported as exc:
                    outcomes[name] = Outcome("not supported", [], exc.reason)
                except grpc.RpcError as exc:
                    code = rpc_code(exc)
                    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
                    status: Status = "not supported" if code == "UNIMPLEMENTED" else "failed"
                    outcomes[name] = Outcome(status, [], f"{code}: {details}")
                except Exception as exc:
                    outcomes[name] = Outcome("failed", [], f"{type(exc).__name__}: {exc}")
                finally:
                    if isinstance(target, CriTarget):
                        remove_all_pods(target.client)
        result = WorkloadResult(workload, outcomes, time.monotonic() - t0)
        opts.log(report.one_line(result))
        return result


@contextlib.contextmanager
def bench(options: Options) -> Iterator[Bench]:
    b = Bench(options)
    try:
        yield b
    finally:
        b.close()


def run(options: Options) -> Results:
    selected = select(options.workloads)
    if options.runs < 1 or (options.count is not None and options.count < 1):
        raise ValueError("--runs and --count must be at least 1")
    started = time.time()
    machine = report.machine_info()
    with bench(options) as b:
        if any(w.kind == "cri" for w in selected):
            b.start_cri()
        if any(w.kind == "oci" for w in selected):
            b.start_oci()
        results = [b.run_workload(w) for w in selected]
        versions = {**report.tool_versions(), **b.versions}
    out = Results(
        machine=machine,
        versions=versions,
        options={
            "command": options.command,
            "workloads": [w.name for w in selected],
            "count": options.count,
            "runs": options.runs,
            "targets": list(CRI_TARGETS),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
        },
        workloads=results,
    )
    out.files = report.write(out, options.results_dir)
    return out
