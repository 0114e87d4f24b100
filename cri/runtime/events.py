"""Container lifecycle events, for GetContainerEvents (kubelet's Evented PLEG).

Pods and Containers publish each transition (created, started, stopped,
deleted; a pod's own events carry the pod's id as the container id) when it
is recorded. Every subscriber, one per GetContainerEvents stream, gets every
event, in publication order, through its own bounded queue: publishing never
waits, so a subscriber that stops reading cannot hold up a lifecycle call.

When a subscriber's queue is full the *oldest* queued event is dropped. The
server builds each CRI message when it sends it, with the statuses of that
moment, so a later event already tells what an older one would have; keeping
the newest means the subscriber ends up with the pod's latest transitions
(dropping new events instead would leave it with only stale ones). Drops are
counted in ``crid_container_events_dropped_total`` and logged once per burst:
a warning at the first drop, a line with the count once the subscriber has
read its queue empty.

Events are not stored: a subscriber sees what is published while it is
subscribed. Startup recovery (exits of containers that died while crid was
down, pods that lost their namespaces) publishes before the first subscriber
can exist, since every RPC answers UNAVAILABLE until recovery has finished;
a client reconnecting after a restart relists (kubelet does on every stream
error). Call ``publish`` from the event loop's thread only.
"""

import asyncio
import enum
import itertools
import logging
import time
from collections import deque
from dataclasses import dataclass
from types import TracebackType

from prometheus_client import Counter

from cri.log import fields
from cri.metrics import REGISTRY
from cri.runtime.sandbox_store import Sandbox

log = logging.getLogger(__name__)

QUEUE_SIZE = 1000

DROPPED = Counter(
    "crid_container_events_dropped",
    "Container events dropped because a GetContainerEvents subscriber did not keep up",
    registry=REGISTRY,
)


class Kind(enum.Enum):
    CREATED = "created"
    STARTED = "started"
    STOPPED = "stopped"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    # the live record: a pod removed meanwhile is still reported as it last was (kubelet needs its uid)
    sandbox: Sandbox
    container_id: str
    created_at: int  # ns


class Subscription:
    """One subscriber's queue; an async iterator of events. Close it (or use
    it as a context manager) when done: that unsubscribes and frees the queue."""

    def __init__(self, bus: "EventBus", number: int, limit: int) -> None:
        self.number = number
        self._bus = bus
        self._limit = limit
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._dropped = 0  # in the current burst
        self.closed = False

    def _put(self, event: Event) -> None:
        if len(self._queue) >= self._limit:
            self._queue.popleft()
            DROPPED.inc()
            if not self._dropped:
                log.warning(
                    "container events subscriber is not keeping up; dropping its oldest events",
                    extra=fields(subscriber=self.number, queued=self._limit),
                )
            self._dropped += 1
        self._queue.append(event)
        self._wake.set()

    def pending(self) -> int:
        return len(self._queue)

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        while not self._queue:
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        event = self._queue.popleft()
        if self._dropped and not self._queue:
            log.info(
                "container events subscriber caught up",
                extra=fields(subscriber=self.number, dropped=self._dropped),
            )
            self._dropped = 0
        return event

    def close(self) -> None:
        """Unsubscribe; iteration ends once what is queued has been read."""
        self.closed = True
        self._bus._subscribers.pop(self.number, None)
        self._wake.set()

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
        self._queue.clear()


class EventBus:
    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self.queue_size = queue_size
        self._subscribers: dict[int, Subscription] = {}
        self._numbers = itertools.count(1)
        self._closed = False

    def publish(self, kind: Kind, sandbox: Sandbox | None, container_id: str = "") -> None:
        """An event for ``container_id`` of ``sandbox`` (empty: the pod itself).
        Without its pod an event is not published: kubelet drops those."""
        if sandbox is None or not self._subscribers:
            return
        event = Event(kind, sandbox, container_id or sandbox.id, time.time_ns())
        for sub in list(self._subscribers.values()):
            sub._put(event)

    def subscribe(self) -> Subscription:
        """Subscribed from now on (not from the first read); on a closed bus
        the subscription has already ended."""
        sub = Subscription(self, next(self._numbers), self.queue_size)
        if self._closed:
            sub.closed = True
        else:
            self._subscribers[sub.number] = sub
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """At shutdown: end every subscription, and those made later."""
        self._closed = True
        for sub in list(self._subscribers.values()):
            sub.close()
