"""The metrics code without a daemon: the operation wrapper's counting, the
collectors that read state at scrape time, pull progress accounting, exits,
and StreamImages' chunks (the same images as ListImages)."""

import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from cri.conditions import Condition
from cri.config import Config
from cri.errors import NotFound
from cri.images.metadata import ImageRecord
from cri.images.pull_metrics import ACTIVE, PULL_PROGRESS, Progress
from cri.metrics import REGISTRY
from cri.runtime.container_metrics import count_exit
from cri.runtime.container_store import State as CState
from cri.runtime.sandbox_store import State as PState
from cri.server import image_service, metrics
from cri.server.image_service import ImageServicer
from cri.server.rpc import Gate, _wrap_stream, _wrap_unary
from cri.server.state_metrics import StateCollector


def value(name: str, **labels: str) -> float:
    v = REGISTRY.get_sample_value(name, labels)
    return 0.0 if v is None else v


class Aborted(Exception):
    pass


class FakeContext:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Aborted(code)


def open_gate() -> Gate:
    gate = Gate()
    gate.open = True
    return gate


async def test_operations_are_counted_by_code_with_children_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    async def op(request: Any, context: Any) -> Any:
        if request == "missing":
            raise NotFound("x")
        return pb.VersionResponse()

    handler = _wrap_unary("RuntimeService", "TestOpUnary", op, open_gate())
    ok, nf = {"operation": "TestOpUnary", "code": "OK"}, {"operation": "TestOpUnary", "code": "NOT_FOUND"}
    assert REGISTRY.get_sample_value("crid_operations_total", ok) == 0  # exists before the first call
    await handler("ok", FakeContext())  # NOT_FOUND's child is resolved on its first use

    lookups: list[tuple[str, ...]] = []

    def spy(real: Any) -> Any:
        def labels(*values: str) -> Any:
            lookups.append(values)
            return real(*values)

        return labels

    for metric in (metrics.OPERATIONS, metrics.OPERATION_SECONDS, metrics.OPERATIONS_IN_FLIGHT):
        monkeypatch.setattr(metric, "labels", spy(metric.labels))
    for _ in range(3):
        await handler("ok", FakeContext())
    with pytest.raises(Aborted):
        await handler("missing", FakeContext())
    with pytest.raises(Aborted):
        await handler("missing", FakeContext())
    assert value("crid_operations_total", **ok) == 4
    assert value("crid_operations_total", **nf) == 2
    assert value("crid_operation_duration_seconds_count", operation="TestOpUnary") == 6
    assert value("crid_operations_in_flight", operation="TestOpUnary") == 0
    assert lookups == [("TestOpUnary", "NOT_FOUND")]  # only the first NOT_FOUND looked its child up


async def test_streamed_operations_count_too() -> None:
    async def items(request: Any, context: Any) -> AsyncIterator[Any]:
        yield pb.StreamImagesResponse()
        yield pb.StreamImagesResponse()

    handler = _wrap_stream("ImageService", "TestOpStream", items, open_gate())
    got = [m async for m in handler(None, FakeContext())]
    assert len(got) == 2
    assert value("crid_operations_total", operation="TestOpStream", code="OK") == 1
    assert value("crid_operations_in_flight", operation="TestOpStream") == 0


@pytest.fixture
def active() -> Iterator[set[Progress]]:
    saved = set(ACTIVE)
    ACTIVE.clear()
    yield ACTIVE
    ACTIVE.clear()
    ACTIVE.update(saved)


def progress_samples() -> dict[tuple[str, str], float]:
    return {(s.name, s.labels["image"]): s.value for fam in PULL_PROGRESS.collect() for s in fam.samples}


def test_pull_progress_series_exist_while_the_pull_runs(active: set[Progress]) -> None:
    a = Progress(image="r/a:1", size=100)
    a.tick(10)  # the config, present or downloaded
    a.got("sha256:l1", 30)
    active.add(a)
    assert progress_samples() == {
        ("crid_image_pull_progress_bytes", "r/a:1"): 40,
        ("crid_image_pull_size_bytes", "r/a:1"): 100,
    }
    a.have("sha256:l1", 50)  # the download finished: the 20 bytes it did not see (another pull's) count
    assert progress_samples()[("crid_image_pull_progress_bytes", "r/a:1")] == 60
    # a second pull of the same image shares the series, with the most progress
    b = Progress(image="r/a:1", size=100)
    b.tick(90)
    active.add(b)
    assert progress_samples()[("crid_image_pull_progress_bytes", "r/a:1")] == 90
    b.tick(50)  # bytes reported twice (a retried download) never exceed the size
    assert progress_samples()[("crid_image_pull_progress_bytes", "r/a:1")] == 100
    active.clear()
    assert progress_samples() == {}


def test_pull_outcomes_and_layer_sources_exist_at_zero() -> None:
    for outcome in ("success", "error", "cancelled"):
        assert REGISTRY.get_sample_value("crid_image_pulls_total", {"outcome": outcome}) is not None
    for source in ("registry", "content_store", "snapshot"):
        assert REGISTRY.get_sample_value("crid_image_pull_layers_total", {"source": source}) is not None
    assert {"crid_image_pull_progress_bytes", "crid_image_pull_size_bytes"} <= {f.name for f in REGISTRY.collect()}


def test_exits_by_reason_and_oom_kills() -> None:
    before = {r: value("crid_container_exits_total", reason=r) for r in ("Completed", "Error", "OOMKilled")}
    ooms = value("crid_container_oom_kills_total")
    for reason in ("Completed", "OOMKilled", "Error", "Completed"):
        count_exit(reason)
    after = {r: value("crid_container_exits_total", reason=r) for r in before}
    assert {r: after[r] - before[r] for r in before} == {"Completed": 2, "Error": 1, "OOMKilled": 1}
    assert value("crid_container_oom_kills_total") == ooms + 1


@dataclass
class Rec:
    state: Any


@dataclass
class FakeStore:
    by_id: dict[str, Rec] = field(default_factory=dict)


class FakeCni:
    def __init__(self) -> None:
        self.ready = False

    def status(self) -> Condition:
        return Condition(self.ready, "" if self.ready else "NetworkPluginNotReady")


class FakePods:
    def __init__(self) -> None:
        self.store = FakeStore({"p1": Rec(PState.READY), "p2": Rec(PState.NOTREADY), "p3": Rec(PState.READY)})
        self.cni = FakeCni()

    def records(self) -> list[Rec]:
        return list(self.store.by_id.values())

    def network_status(self) -> Condition:
        return self.cni.status()


class FakeContainers:
    def __init__(self) -> None:
        self.store = FakeStore({"c1": Rec(CState.RUNNING), "c2": Rec(CState.EXITED), "c3": Rec(CState.RUNNING)})

    def records(self) -> list[Rec]:
        return list(self.store.by_id.values())


def state_samples(c: StateCollector) -> dict[tuple[str, str], float]:
    return {(s.name, next(iter(s.labels.values()))): s.value for fam in c.collect() for s in fam.samples}


def test_state_collector_counts_at_scrape_time(tmp_path: Any) -> None:
    config = Config(root_dir=str(tmp_path / "root"), state_dir=str(tmp_path / "state"))
    (tmp_path / "root").mkdir()
    (tmp_path / "state").mkdir()
    c = StateCollector()
    assert state_samples(c) == {}  # not attached: families without samples
    pods, containers, gate = FakePods(), FakeContainers(), Gate()
    c.attach(config, gate, pods, containers)  # type: ignore[arg-type]
    got = state_samples(c)
    assert {k: v for k, v in got.items() if k[0] == "crid_containers"} == {
        ("crid_containers", "creating"): 0,
        ("crid_containers", "created"): 0,
        ("crid_containers", "running"): 2,
        ("crid_containers", "exited"): 1,
    }
    assert got[("crid_pods", "ready")] == 2 and got[("crid_pods", "notready")] == 1
    assert got[("crid_pods", "creating")] == 0
    # RuntimeReady waits for the gate (startup recovery); NetworkReady follows the CNI status
    assert got[("crid_runtime_condition", "RuntimeReady")] == 0
    assert got[("crid_runtime_condition", "NetworkReady")] == 0
    gate.open, pods.cni.ready = True, True
    del containers.store.by_id["c2"]
    got = state_samples(c)
    assert got[("crid_containers", "exited")] == 0
    assert got[("crid_runtime_condition", "NetworkReady")] == 1
    # RuntimeReady is the Status check: true only where the default runtime binary exists
    expected = int(shutil.which(config.runtime.handlers[config.runtime.default_handler].binary) is not None)
    assert got[("crid_runtime_condition", "RuntimeReady")] == expected


def _image(n: int) -> ImageRecord:
    return ImageRecord(
        id=f"sha256:{n:064x}",
        manifest_digest=f"sha256:{n + 1:064x}",
        manifest_media_type="application/vnd.oci.image.manifest.v1+json",
        size=n,
        uid=None,
        username="",
        chain_ids=[],
        blobs=[],
        created_at=n,
    )


class FakeImages:
    def __init__(self, n: int) -> None:
        self.images = [_image(i) for i in range(n)]

    def all(self) -> list[ImageRecord]:
        return list(self.images)

    def find(self, text: str) -> ImageRecord | None:
        return next((i for i in self.images if i.id == text), None)


async def test_stream_images_sends_list_images_in_bounded_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_service, "STREAM_CHUNK", 2)
    svc = ImageServicer(FakeImages(5))  # type: ignore[arg-type]
    listed = await svc.ListImages(pb.ListImagesRequest(), None)
    chunks = [r async for r in svc.StreamImages(pb.StreamImagesRequest(), None)]
    assert [len(r.images) for r in chunks] == [2, 2, 1]
    assert [i for r in chunks for i in r.images] == list(listed.images)
    wanted = pb.ImageFilter(image=pb.ImageSpec(image=_image(3).id))
    chunks = [r async for r in svc.StreamImages(pb.StreamImagesRequest(filter=wanted), None)]
    assert [i.id for r in chunks for i in r.images] == [_image(3).id]
    nothing = pb.ImageFilter(image=pb.ImageSpec(image="sha256:" + "f" * 64))
    assert [r async for r in svc.StreamImages(pb.StreamImagesRequest(filter=nothing), None)] == []
