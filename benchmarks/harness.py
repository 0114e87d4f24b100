"""Run the selected workloads A/B against their targets and write the results.

``run(Options(...))`` is the Python API (``python -m benchmarks`` and the
smoke test use it). In a temporary dir it:

- starts a local registry (Debian's docker-registry, plain HTTP on 127.0.0.1)
  and pushes the test images to it, if a selected workload needs images;
- starts crid and containerd (if a CRI workload is selected), each with a
  hosts.toml for that registry and a bridge network of its own (different
  bridge names and subnets, host-local IPAM state in the run's dir);
  containerd's sandbox_image is the pushed pause image;
- builds the floor's busybox bundle (if an OCI runtime workload is selected);
  machine workloads (the floor of a pull) need only the registry;
- runs each workload for its number of rounds, alternating the targets
  inside every round (crid, containerd, crid, containerd, ...) so that drift
  hits both;
- stops everything it started, also on an exception or Ctrl-C: pods,
  daemons, shims, registry, bridges, cgroups, mounts, the temporary dir;
- writes results.json, results.md, samples.json and latency.png.
"""

import contextlib
import dataclasses
import importlib
import json
import secrets
import shutil
import signal
import subprocess
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

from benchmarks import images, oci, report
from benchmarks.containerd import (
    CNI_BIN_DIR,
    SANDBOX_IMAGE,
    ContainerdProcess,
    cni_conflist,
    delete_oci_containers,
    kill_processes_mentioning,
)
from benchmarks.core import (
    CRI_TARGETS,
    NEEDS_IMAGES,
    REGISTRY,
    CriTarget,
    ImageSizes,
    MachineTarget,
    NotSupported,
    OciTarget,
    Params,
    Row,
    TestImages,
    Workload,
    probe,
    rpc_code,
)
from benchmarks.host_setup import delete_link, free_subnets, make_cgroup, remove_cgroups
from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess
from tests.support.registry import Registry

DEFAULT_RUNS = 5  # rounds of a workload that sets none (each workload has its own default)

Status = Literal["ok", "not supported", "failed"]


@dataclass
class Options:
    results_dir: Path
    workloads: list[str] | None = None  # names; None: every registered one
    count: int | None = None  # samples per round; None: each workload's default
    runs: int | None = None  # A/B rounds; None: each workload's default
    workdir: Path | None = None  # where the run's temporary dir is made (default /tmp); it is removed after
    sizes: ImageSizes = field(default_factory=ImageSizes)  # of the pushed test images
    command: str = ""  # shown in the results
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))


@dataclass
class Outcome:
    status: Status = "ok"
    samples: list[float] = field(default_factory=list)
    reason: str = ""


@dataclass
class WorkloadResult:
    workload: Workload[Any]  # for a row of a multi-row workload: that row (its ``parent`` is the workload)
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


# the modules that register workloads, in the order they run (rss_end, "after all the workloads
# above", comes after the pods, pulls and containers; the node's 110 pods come late)
WORKLOAD_MODULES = (
    "pull_floor",
    "workloads",
    "image_workloads",
    "container_workloads",
    "exec_workloads",
    "grpc_floor",
    "monitor_floor",
    "node_workloads",
    "spec_floor",
    "stats_workloads",
)


def select(names: list[str] | None) -> list[Workload[Any]]:
    for module in WORKLOAD_MODULES:
        importlib.import_module(f"benchmarks.{module}")
    if names is None:
        return list(REGISTRY.values())
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in dict.fromkeys(names)]


__all__ = ["Options", "Results", "WorkloadResult", "probe", "rpc_code", "run", "select"]


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
        self.registry: Registry | None = None
        self.images: TestImages | None = None
        self.networks: dict[str, dict[str, str]] = {}  # runtime -> its pod network's bridge and subnet
        self._probes: dict[tuple[str, str], str | None] = {}
        self.stack.callback(self._remove_base)

    def _keep_logs(self) -> None:
        """Copy the daemons' and the registry's logs to ``<results>/logs/`` before the run's dir goes."""
        logs = self.options.results_dir / "logs"
        for name in ("crid/crid.log", "containerd/containerd.log", "registry/registry.log"):
            source = self.base / name
            if source.is_file():
                logs.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(OSError):
                    shutil.copyfile(source, logs / source.name)

    def _remove_base(self) -> None:
        self._keep_logs()
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

    def start_registry(self) -> None:
        registry = Registry(self.base / "registry")
        self.stack.callback(registry.stop)
        registry.start()
        self.registry = registry
        self.options.log(f"registry at {registry.url}; building and pushing the test images")
        self.images = images.build_and_push(registry, self.options.sizes, self.options.log)

    def start_cri(self) -> None:
        log = self.options.log
        crid_subnet, containerd_subnet = free_subnets(2)
        crid_bridge = "cridb" + secrets.token_hex(3)
        crid_dir = self.base / "crid"
        net_dir = crid_dir / "net.d"
        crid = CridProcess(
            self.base,
            "crid",
            {
                "log": {"level": "info", "format": "json"},
                "cni": {"conf_dir": str(net_dir), "bin_dirs": [CNI_BIN_DIR]},
            },
        )
        net_dir.mkdir(parents=True, exist_ok=True)
        conflist = cni_conflist("crid-bench", crid_bridge, crid_subnet, str(crid_dir / "cni-ipam"))
        (net_dir / "10-crid-bench.conflist").write_text(json.dumps(conflist, indent=2) + "\n")
        if self.registry is not None:
            images.write_hosts_toml(Path(crid.config.images.registry_config_dir), self.registry)
        self.stack.callback(delete_link, crid_bridge)  # after crid has stopped
        self.stack.callback(self._stop_crid, crid)
        make_cgroup(f"{self.cgroup_name}/crid")  # removed by _remove_base
        self.networks["crid"] = {"bridge": crid_bridge, "subnet": crid_subnet}
        log(f"starting crid in {crid.dir} (pods on bridge {crid_bridge}, {crid_subnet})")
        crid.start()
        assert crid.proc is not None
        root = Path(crid.root)
        self.cri["crid"] = CriTarget(
            "crid",
            crid.client,
            crid.proc.pid,
            crid.dir,
            f"/{self.cgroup_name}/crid",
            content_dir=root / "content" / "blobs" / "sha256",
            snapshots_dir=root / "snapshots",
            bundles_dir=Path(crid.state) / "containers",
            socket=crid.socket,
        )
        self.cri["crid"].restart = lambda: self._restart_crid(crid)

        pause = self.images.pause.ref if self.images is not None else SANDBOX_IMAGE
        containerd = ContainerdProcess(self.base, sandbox_image=pause, subnet=containerd_subnet)
        make_cgroup(f"{self.cgroup_name}/containerd")
        self.networks["containerd"] = {"bridge": containerd.bridge, "subnet": containerd_subnet}
        if self.registry is not None:
            images.write_hosts_toml(containerd.registry_config_dir, self.registry)
        self.stack.callback(self._stop_containerd, containerd)
        log(f"starting containerd in {containerd.dir} (pods on bridge {containerd.bridge}, {containerd_subnet})")
        containerd.start()
        self.cri["containerd"] = CriTarget(
            "containerd",
            containerd.client,
            containerd.pid,
            containerd.dir,
            f"/{self.cgroup_name}/containerd",
            content_dir=containerd.content_dir,
            snapshots_dir=containerd.snapshots_dir,
            bundles_dir=containerd.state / "io.containerd.runtime.v2.task" / "k8s.io",
            socket=containerd.socket,
        )
        self.cri["containerd"].restart = lambda: self._restarted("containerd", containerd, containerd.restart())
        for name, target in self.cri.items():
            v = target.client.runtime.Version(pb.VersionRequest())
            answer = f"{v.runtime_name} {v.runtime_version} ({v.runtime_api_version})"
            self.versions[f"{name} (CRI Version)"] = answer

    def _restart_crid(self, crid: CridProcess) -> float:
        crid.stop()  # SIGTERM: crid leaves its containers running
        with open(crid.log_path, "ab") as log:
            started = time.perf_counter()
            crid.proc = subprocess.Popen(crid.command(), stderr=log, stdout=log, stdin=subprocess.DEVNULL)
        return self._restarted("crid", crid, started)

    def _restarted(self, name: str, daemon: CridProcess | ContainerdProcess, started: float) -> float:
        """The target gets the new process's pid and a new client (the old channel backs off)."""
        assert daemon.proc is not None
        self.cri[name].pid = daemon.proc.pid
        self.cri[name].client = daemon.client
        return started

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

    def target(self, workload: Workload[Any], name: str) -> CriTarget | OciTarget | MachineTarget:
        if workload.kind == "machine":
            return MachineTarget(name)
        return self.cri[name] if workload.kind == "cri" else self.oci[name]

    def check(self, workload: Workload[Any], target: CriTarget | OciTarget | MachineTarget, params: Params) -> None:
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

    def run_workload(self, workload: Workload[Any]) -> list[WorkloadResult]:
        """All rounds of one workload; one result, or one per row of a multi-row workload."""
        opts = self.options
        count = opts.count or workload.count
        runs = opts.runs or workload.runs
        rows = workload.rows or (Row("", workload.title, workload.unit),)
        outcomes = {row.key: {name: Outcome() for name in workload.targets} for row in rows}
        t0 = time.monotonic()
        for rnd in range(runs):
            for name in workload.targets:  # A, B, A, B, ...
                live = [row.key for row in rows if outcomes[row.key][name].status == "ok"]
                if not live:
                    continue
                target = self.target(workload, name)
                workdir = self.base / "work" / workload.name / name
                workdir.mkdir(parents=True, exist_ok=True)
                params = Params(count=count, round=rnd, workdir=workdir, images=self.images)
                failure: Outcome | None = None
                try:
                    self.check(workload, target, params)
                    got = workload.run(target, params)
                    per_row = {"": got} if isinstance(got, list) else got
                    for key in live:
                        value = per_row.get(key)
                        if isinstance(value, NotSupported):
                            outcomes[key][name] = Outcome("not supported", [], value.reason)
                        elif value is None:
                            outcomes[key][name] = Outcome("failed", [], f"the workload returned no {key!r} samples")
                        else:
                            outcomes[key][name].samples += value
                except NotSupported as exc:
                    failure = Outcome("not supported", [], exc.reason)
                except grpc.RpcError as exc:
                    code = rpc_code(exc)
                    details = exc.details() if callable(getattr(exc, "details", None)) else str(exc)
                    status: Status = "not supported" if code == "UNIMPLEMENTED" else "failed"
                    failure = Outcome(status, [], f"{code}: {details}")
                except Exception as exc:
                    failure = Outcome("failed", [], f"{type(exc).__name__}: {exc}")
                finally:
                    if isinstance(target, CriTarget):
                        remove_all_pods(target.client)
                if failure is not None:
                    for key in live:
                        outcomes[key][name] = dataclasses.replace(failure)
        seconds = time.monotonic() - t0
        if not workload.rows:
            results = [WorkloadResult(workload, outcomes[""], seconds)]
        else:
            results = [
                WorkloadResult(
                    dataclasses.replace(
                        workload,
                        name=f"{workload.name}.{row.key}",
                        title=row.title,
                        unit=row.unit,
                        rows=(),
                        parent=workload.name,
                    ),
                    outcomes[row.key],
                    seconds,
                )
                for row in rows
            ]
        for r in results:
            opts.log(report.one_line(r))
        return results


@contextlib.contextmanager
def bench(options: Options) -> Iterator[Bench]:
    b = Bench(options)
    try:
        yield b
    finally:
        b.close()


def run(options: Options) -> Results:
    selected = select(options.workloads)
    if (options.runs is not None and options.runs < 1) or (options.count is not None and options.count < 1):
        raise ValueError("--runs and --count must be at least 1")
    started = time.time()
    machine = report.machine_info()
    with bench(options) as b:
        if any(w.needs_images for w in selected):
            b.start_registry()
        if any(w.kind == "cri" for w in selected):
            b.start_cri()
        if any(w.kind == "oci" for w in selected):
            b.start_oci()
        results = [r for w in selected for r in b.run_workload(w)]
        versions = {**report.tool_versions(), **b.versions}
    out = Results(
        machine=machine,
        versions=versions,
        options={
            "command": options.command,
            "workloads": [w.name for w in selected],
            "count": options.count,
            "runs": options.runs,
            "image_sizes": dataclasses.asdict(options.sizes),
            "test_images": dataclasses.asdict(b.images) if b.images is not None else None,
            "targets": list(CRI_TARGETS),
            "pod_networks": b.networks,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "seconds": round(time.time() - started, 1),
        },
        workloads=results,
    )
    out.files = report.write(out, options.results_dir)
    return out
