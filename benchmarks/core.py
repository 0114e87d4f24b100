"""The workload registry and the handles a workload gets.

A workload is a function registered by name. It gets a *target* handle (a CRI
runtime such as crid or containerd, or a bare OCI runtime such as runc for the
floor) and the round's parameters, and returns samples. A target that cannot
do the workload raises :class:`NotSupported` (the harness also turns an
``UNIMPLEMENTED`` gRPC status into it); the workload is then reported as not
supported for that target, with the reason, never dropped.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from cri.api.client import CriClient

Unit = Literal["s", "bytes", "MB/s"]
Kind = Literal["cri", "oci"]

# the targets of each kind of workload, in the order of the A/B alternation
CRI_TARGETS = ("crid", "containerd")
OCI_TARGETS = ("runc", "crun")


NEEDS_IMAGES = "needs the test images (pause, busybox, a large image) in a local registry: not built yet"


class NotSupported(Exception):
    """The target cannot run this workload: an RPC it lacks, a missing prerequisite."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TestImages:
    """Images in a local registry that the pod and container workloads use."""

    __test__ = False  # not a pytest class

    pause: str
    busybox: str
    large: str  # a multi-layer image for the cold pull


@dataclass
class CriTarget:
    """A running CRI daemon."""

    name: str  # "crid" | "containerd"
    client: CriClient
    pid: int  # the daemon process (for RSS)
    dir: Path  # the daemon's temporary dir: its processes have it on their command line
    cgroup_parent: str  # cgroupfs parent for the pods a workload makes, removed at teardown


@dataclass
class OciTarget:
    """An OCI runtime binary run directly, with no CRI daemon: the floor."""

    name: str  # "runc" | "crun"
    binary: str
    root: Path  # its --root
    bundle: Path  # the busybox bundle (config.json + rootfs)


@dataclass
class Params:
    count: int  # samples (iterations) per round
    round: int  # 0-based round of the A/B alternation
    workdir: Path  # scratch dir of this workload and target
    images: TestImages | None


T = TypeVar("T", CriTarget, OciTarget)


@dataclass(frozen=True)
class Workload(Generic[T]):
    name: str
    title: str  # the row label in results.md
    kind: Kind
    unit: Unit
    count: int  # default samples per round
    run: Callable[[T, Params], list[float]]
    rpcs: tuple[str, ...] = ()  # CRI RPCs it needs: one answering UNIMPLEMENTED makes it not supported
    needs_images: bool = False

    @property
    def targets(self) -> tuple[str, ...]:
        return CRI_TARGETS if self.kind == "cri" else OCI_TARGETS


REGISTRY: dict[str, Workload[Any]] = {}

CriFn = Callable[[CriTarget, Params], list[float]]
OciFn = Callable[[OciTarget, Params], list[float]]


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
) -> Callable[[CriFn], CriFn]:
    """Register a workload run against each CRI runtime (crid, containerd)."""

    def deco(fn: CriFn) -> CriFn:
        _register(Workload[CriTarget](name, title, "cri", unit, count, fn, rpcs, needs_images))
        return fn

    return deco


def oci_workload(name: str, title: str, *, unit: Unit = "s", count: int = 20) -> Callable[[OciFn], OciFn]:
    """Register a workload run against each bare OCI runtime (runc, crun)."""

    def deco(fn: OciFn) -> OciFn:
        _register(Workload[OciTarget](name, title, "oci", unit, count, fn))
        return fn

    return deco
