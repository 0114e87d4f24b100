"""The workload registry and the handles a workload gets.

A workload is a function registered by name. It gets a *target* handle (a CRI
runtime such as crid or containerd, or a bare OCI runtime such as runc for the
floor) and the round's parameters, and returns samples: a list, or for a
workload that measures several things at once (RunPodSandbox, StopPodSandbox
and RemovePodSandbox of the same pods) one list per declared :class:`Row`.
A *machine* workload measures the machine itself with no runtime at all (the
floor of a cold pull); its one target is "machine".
A target that cannot do the workload raises :class:`NotSupported` (the harness
also turns an ``UNIMPLEMENTED`` gRPC status into it); the workload is then
reported as not supported for that target, with the reason, never dropped. A
multi-row workload can also put a :class:`NotSupported` in place of one row.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import grpc

from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb

Unit = Literal["s", "bytes", "MB/s", "%"]  # %: CPU time over wall time
Kind = Literal["cri", "oci", "machine"]

# the targets of each kind of workload, in the order of the A/B alternation
CRI_TARGETS = ("crid", "containerd")
OCI_TARGETS = ("runc", "crun")
MACHINE_TARGETS = ("machine",)

IMAGE_RPCS = {"ListImages", "ImageStatus", "PullImage", "RemoveImage", "ImageFsInfo"}

NEEDS_IMAGES = "needs the test images (pause, busybox, big, small files) in a local registry: none were pushed"


class NotSupported(Exception):
    """The target cannot run this workload: an RPC it lacks, a missing prerequisite."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageSizes:
    """How big the pushed benchmark images are (the smoke test makes them tiny)."""

    big_bytes: int = 300 * 1000 * 1000  # incompressible data of the big image, over big_layers layers
    big_layers: int = 3
    big_file_bytes: int = 32 << 20  # files of the big image's layers
    small_files: int = 20_000  # files of the one layer of the small-files image


@dataclass(frozen=True)
class PushedImage:
    """An image in the local registry, as both runtimes name it."""

    ref: str  # 127.0.0.1:PORT/bench/NAME:TAG
    compressed_bytes: int  # manifest + config + compressed layers: what a pull downloads
    unpacked_bytes: int  # the layers' tar streams
    blobs: tuple[str, ...]  # config and layer digests: gone from a runtime's content store when it is cold


@dataclass(frozen=True)
class TestImages:
    """The images in the local registry that the image, pod and container workloads use."""

    __test__ = False  # not a pytest class

    pause: PushedImage  # containerd's sandbox_image (catatonit -P)
    busybox: PushedImage  # the containers' image
    big: PushedImage  # a few layers of large incompressible files: cold pull throughput
    small: PushedImage  # one layer of many small files: cold pull of a metadata-heavy layer


@dataclass
class CriTarget:
    """A running CRI daemon."""

    name: str  # "crid" | "containerd"
    client: CriClient
    pid: int  # the daemon process (for RSS)
    dir: Path  # the daemon's temporary dir: its processes have it on their command line
    cgroup_parent: str  # cgroupfs parent for the pods a workload makes, removed at teardown
    content_dir: Path  # where its content store keeps blobs by hex digest
    snapshots_dir: Path  # where its unpacked layers live, one numbered dir each
    bundles_dir: Path  # where its containers' OCI bundles are, one dir per container id (containerd's once started)
    socket: str = ""  # its CRI socket
    # stops the daemon (SIGTERM: its containers keep running), starts it again without waiting
    # for it and returns the time.perf_counter() of the start; pid and client then are the new one's
    restart: Callable[[], float] | None = None


@dataclass
class OciTarget:
    """An OCI runtime binary run directly, with no CRI daemon: the floor."""

    name: str  # "runc" | "crun"
    binary: str
    root: Path  # its --root
    bundle: Path  # the busybox bundle (config.json + rootfs)


@dataclass
class MachineTarget:
    """The bare machine: tools (curl, GNU tar) and Python's C libraries on the test registry's blobs."""

    name: str  # "machine"


@dataclass
class Params:
    count: int  # samples (iterations) per round
    round: int  # 0-based round of the A/B alternation
    workdir: Path  # scratch dir of this workload and target
    images: TestImages | None


@dataclass(frozen=True)
class Row:
    """One measured quantity of a multi-row workload: a row of its own in the results."""

    key: str
    title: str
    unit: Unit = "s"


T = TypeVar("T", CriTarget, OciTarget, MachineTarget)
RowSamples = dict[str, list[float] | NotSupported]
Samples = list[float] | RowSamples


@dataclass(frozen=True)
class Workload(Generic[T]):
    name: str
    title: str  # the row label in results.md
    kind: Kind
    unit: Unit
    count: int  # default samples per round
    run: Callable[[T, Params], Samples]
    rpcs: tuple[str, ...] = ()  # CRI RPCs it needs: one answering UNIMPLEMENTED makes it not supported
    needs_images: bool = False
    runs: int = 5  # default A/B rounds
    rows: tuple[Row, ...] = ()  # several results per call: ``run`` returns {row key: samples}
    parent: str = ""  # for the row of a multi-row workload: that workload's name

    @property
    def targets(self) -> tuple[str, ...]:
        return {"cri": CRI_TARGETS, "oci": OCI_TARGETS, "machine": MACHINE_TARGETS}[self.kind]


REGISTRY: dict[str, Workload[Any]] = {}

CriFn = Callable[[CriTarget, Params], list[float]]
CriRowsFn = Callable[[CriTarget, Params], RowSamples]
OciFn = Callable[[OciTarget, Params], list[float]]
MachineRowsFn = Callable[[MachineTarget, Params], RowSamples]


def _register(workload: Workload[Any]) -> None:
    if workload.name in REGISTRY:
        raise ValueError(f"workload {workload.name!r} registered twice")
    REGISTRY[workload.name] = workload


def cri_workload(
    name: str,
    title: str,
    *,
    unit: Unit = "s",
    count: int = 1000,
    rpcs: tuple[str, ...] = (),
    needs_images: bool = False,
    runs: int = 5,
) -> Callable[[CriFn], CriFn]:
    """Register a workload run against each CRI runtime (crid, containerd)."""

    def deco(fn: CriFn) -> CriFn:
        _register(Workload[CriTarget](name, title, "cri", unit, count, fn, rpcs, needs_images, runs))
        return fn

    return deco


def cri_rows_workload(
    name: str,
    rows: tuple[Row, ...],
    *,
    count: int = 10,
    rpcs: tuple[str, ...] = (),
    needs_images: bool = False,
    runs: int = 5,
) -> Callable[[CriRowsFn], CriRowsFn]:
    """Register a CRI workload whose every call measures several rows (``fn`` returns {row key: samples})."""

    def deco(fn: CriRowsFn) -> CriRowsFn:
        title = ", ".join(r.title for r in rows)
        _register(
            Workload[CriTarget](name, title, "cri", rows[0].unit, count, fn, rpcs, needs_images, runs, tuple(rows))
        )
        return fn

    return deco


def oci_workload(
    name: str, title: str, *, unit: Unit = "s", count: int = 20, runs: int = 5
) -> Callable[[OciFn], OciFn]:
    """Register a workload run against each bare OCI runtime (runc, crun)."""

    def deco(fn: OciFn) -> OciFn:
        _register(Workload[OciTarget](name, title, "oci", unit, count, fn, runs=runs))
        return fn

    return deco


def machine_rows_workload(
    name: str, rows: tuple[Row, ...], *, count: int = 1, runs: int = 3, needs_images: bool = False
) -> Callable[[MachineRowsFn], MachineRowsFn]:
    """Register a workload run once per round on the bare machine (``fn`` returns {row key: samples})."""

    def deco(fn: MachineRowsFn) -> MachineRowsFn:
        title = ", ".join(r.title for r in rows)
        _register(
            Workload[MachineTarget](
                name, title, "machine", rows[0].unit, count, fn, (), needs_images, runs, tuple(rows)
            )
        )
        return fn

    return deco


# --- asking a runtime what it implements ---------------------------------------


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
