"""The container event bus (cri/runtime/events.py) and the messages built from its events."""

import asyncio
import gc
import logging
import weakref

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.metrics import REGISTRY
from cri.runtime.container_store import Container
from cri.runtime.container_store import State as CState
from cri.runtime.events import Event, EventBus, Kind, Subscription
from cri.runtime.sandbox_store import Sandbox, State
from cri.server.events_service import event_message


def sandbox(n: int = 1) -> Sandbox:
    meta = pb.PodSandboxMetadata(name=f"pod{n}", namespace="ns", uid=f"uid-{n}")
    return Sandbox(f"sb{n}", f"pod{n}_ns", "fp", "", State.READY, 1, pb.PodSandboxConfig(metadata=meta))


def dropped() -> float:
    return REGISTRY.get_sample_value("crid_container_events_dropped_total") or 0.0


async def drain(sub: Subscription) -> list[tuple[Kind, str]]:
    out = []
    while sub.pending():
        e = await anext(sub)
        out.append((e.kind, e.container_id))
    return out


async def test_every_subscriber_gets_every_event_in_order() -> None:
    bus, sb = EventBus(), sandbox()
    a, b = bus.subscribe(), bus.subscribe()
    bus.publish(Kind.CREATED, sb)  # before any read: a subscription counts from subscribe()
    bus.publish(Kind.STARTED, sb)
    bus.publish(Kind.CREATED, sb, "c1")
    bus.publish(Kind.STARTED, sb, "c1")
    bus.publish(Kind.STOPPED, sb, "c1")
    want = [(Kind.CREATED, "sb1"), (Kind.STARTED, "sb1"), (Kind.CREATED, "c1"), (Kind.STARTED, "c1"),
            (Kind.STOPPED, "c1")]  # fmt: skip
    assert await drain(a) == want
    assert await drain(b) == want


async def test_a_reader_waits_for_the_next_event() -> None:
    bus, sb = EventBus(), sandbox()
    with bus.subscribe() as sub:
        reader = asyncio.ensure_future(anext(sub))
        await asyncio.sleep(0.01)
        assert not reader.done()
        bus.publish(Kind.DELETED, sb, "c9")
        e = await asyncio.wait_for(reader, 1)
    assert (e.kind, e.container_id, e.sandbox) == (Kind.DELETED, "c9", sb)
    assert e.created_at > 0


async def test_a_full_queue_drops_its_oldest_and_counts_it(caplog: pytest.LogCaptureFixture) -> None:
    bus, sb = EventBus(queue_size=3), sandbox()
    slow, fast = bus.subscribe(), bus.subscribe()
    before = dropped()
    seen = []
    with caplog.at_level(logging.INFO, logger="cri.runtime.events"):
        for i in range(5):
            bus.publish(Kind.STARTED, sb, f"c{i}")
            seen += await drain(fast)  # a subscriber that keeps up loses nothing
        assert await drain(slow) == [(Kind.STARTED, "c2"), (Kind.STARTED, "c3"), (Kind.STARTED, "c4")]
    assert seen == [(Kind.STARTED, f"c{i}") for i in range(5)]
    assert dropped() - before == 2
    # logged once per burst: one warning at the first drop, one line with the count when caught up
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not keeping up" in warnings[0].getMessage()
    caught_up = [r for r in caplog.records if "caught up" in r.getMessage()]
    assert len(caught_up) == 1 and caught_up[0].crid_fields["dropped"] == 2  # type: ignore[attr-defined]
    # the next burst is logged again
    fast.close()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="cri.runtime.events"):
        for i in range(4):
            bus.publish(Kind.STOPPED, sb, f"c{i}")
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert dropped() - before == 3


async def test_publishing_never_waits_for_a_stalled_subscriber() -> None:
    bus, sb = EventBus(queue_size=10), sandbox()
    stalled = bus.subscribe()
    for i in range(10_000):  # synchronous: there is nothing to wait on
        bus.publish(Kind.STARTED, sb, f"c{i}")
    assert stalled.pending() == 10


async def test_cancelled_reader_unsubscribes_and_leaves_nothing() -> None:
    bus, sb = EventBus(), sandbox()
    started = asyncio.Event()
    ref: list[weakref.ref[Subscription]] = []

    async def reader() -> None:
        with bus.subscribe() as sub:
            ref.append(weakref.ref(sub))
            started.set()
            async for _ in sub:
                pass

    task = asyncio.ensure_future(reader())
    await started.wait()
    bus.publish(Kind.CREATED, sb, "c1")
    assert bus.subscribers == 1
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled() and bus.subscribers == 0
    del task
    gc.collect()
    assert ref[0]() is None  # the bus keeps no reference: no queue left behind
    bus.publish(Kind.STOPPED, sb, "c1")  # and publishing to nobody is fine


async def test_close_ends_every_subscription_and_later_ones() -> None:
    bus, sb = EventBus(), sandbox()
    waiting = bus.subscribe()
    reader = asyncio.ensure_future(drain_all(waiting))
    await asyncio.sleep(0)
    sub = bus.subscribe()
    bus.publish(Kind.CREATED, sb)
    bus.close()
    assert [e.kind for e in await asyncio.wait_for(reader, 1)] == [Kind.CREATED]  # a waiting reader is woken
    assert [e.kind async for e in sub] == [Kind.CREATED]  # what was queued is still read, then the end
    late = bus.subscribe()
    assert [e async for e in late] == [] and bus.subscribers == 0
    bus.publish(Kind.STARTED, sb)
    assert late.pending() == 0


async def drain_all(sub: Subscription) -> list[Event]:
    return [e async for e in sub]


async def test_an_event_without_its_pod_is_not_published() -> None:
    bus = EventBus()
    sub = bus.subscribe()
    bus.publish(Kind.STOPPED, None, "orphan")
    assert sub.pending() == 0


def container(cid: str, sb: Sandbox, state: CState) -> Container:
    c = Container(
        cid, f"name-{cid}", "fp", sb.id, state, 5, pb.ContainerConfig(metadata=pb.ContainerMetadata(name=cid))
    )
    c.exit_code = 3 if state == CState.EXITED else 0
    return c


def test_event_message_carries_the_pod_with_its_uid_and_its_containers() -> None:
    sb = sandbox(7)
    sb.state = State.NOTREADY
    cs = [container("a", sb, CState.RUNNING), container("b", sb, CState.EXITED), container("c", sb, CState.CREATING)]
    msg = event_message(Event(Kind.STOPPED, sb, "b", 1234), cs)
    assert (msg.container_id, msg.container_event_type, msg.created_at) == ("b", pb.CONTAINER_STOPPED_EVENT, 1234)
    assert msg.pod_sandbox_status.id == "sb7" and msg.pod_sandbox_status.metadata.uid == "uid-7"
    assert msg.pod_sandbox_status.state == pb.SANDBOX_NOTREADY
    # a container still being created is not reported, as in ListContainers
    assert [(s.id, s.state, s.exit_code) for s in msg.containers_statuses] == [
        ("a", pb.CONTAINER_RUNNING, 0),
        ("b", pb.CONTAINER_EXITED, 3),
    ]
    types = {k: event_message(Event(k, sb, sb.id, 1), []).container_event_type for k in Kind}
    assert types == {
        Kind.CREATED: pb.CONTAINER_CREATED_EVENT,
        Kind.STARTED: pb.CONTAINER_STARTED_EVENT,
        Kind.STOPPED: pb.CONTAINER_STOPPED_EVENT,
        Kind.DELETED: pb.CONTAINER_DELETED_EVENT,
    }
