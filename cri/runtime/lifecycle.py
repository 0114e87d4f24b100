"""What the pod and container lifecycles share: reservations, creates in
flight, per-object locks, and teardown steps.

A create (RunPodSandbox, CreateContainer) records its object under a reserved
name before it touches the system and runs in a task of its own, so a client
whose deadline expires does not interrupt it; a retry with the same name and
config joins that attempt and gets the same id. Every other change of an
object runs under the object's lock; a lock is dropped as soon as nobody
holds or waits for it, so the map holds only objects being worked on.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, Generic

from cri.errors import AlreadyExists
from cri.keyed_locks import KeyedLocks
from cri.log import fields
from cri.runtime.records import R, RecordTable

log = logging.getLogger(__name__)


async def drain_tasks(tasks: "list[asyncio.Task[str]]", seconds: float) -> None:
    """Wait for work in flight; cancel what is still running after ``seconds`` and wait for its undo."""
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.wait(pending)


class Lifecycle(Generic[R]):
    """Creates in flight by reserved name, and the per-id locks, of one record table."""

    def __init__(self, store: RecordTable[R]) -> None:
        self.store = store
        self.locks = KeyedLocks()
        self._tasks: dict[str, asyncio.Task[str]] = {}  # reserved name -> its create

    async def reserve(self, name: str, fingerprint: str, taken: Callable[[R], str]) -> str | None:
        """None when ``name`` is free. A repeated call (same fingerprint) gets the id of
        the record, once the create in flight for it is done; another config gets
        AlreadyExists with the message ``taken`` makes of the record holding the name."""
        existing = self.store.by_name.get(name)
        if existing is None:
            return None  # no await on this path: the caller records the name before anyone else can
        record = self.store.by_id[existing]
        if record.fingerprint != fingerprint:
            raise AlreadyExists(taken(record))
        task = self._tasks.get(name)
        if task is not None:  # a retry after the client's deadline: join the work in progress
            return await asyncio.shield(task)
        return record.id

    async def launch(self, name: str, work: Coroutine[Any, Any, str]) -> str:
        """Run a create in its own task (a cancelled caller does not cancel it) and wait for it."""
        task = asyncio.ensure_future(work)
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._tasks.pop(name, None) if self._tasks.get(name) is t else None)
        return await asyncio.shield(task)

    async def attempt(
        self, key: str, work: Callable[[], Awaitable[None]], undo: Callable[[BaseException], Awaitable[None]]
    ) -> None:
        """``work`` under the lock of ``key``; on any failure (a cancel too) ``undo`` runs
        and the failure is raised (or what ``undo`` raises)."""
        try:
            async with self.locks.hold(key):
                await work()
        except BaseException as exc:
            await undo(exc)
            raise

    def in_flight(self, name: str) -> bool:
        return name in self._tasks

    async def settle(self, name: str) -> None:
        """Let the create in flight for ``name`` finish (or fail) first."""
        task = self._tasks.get(name)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def settle_all(self, names: Iterable[str]) -> None:
        pending = [self._tasks[n] for n in names if n in self._tasks]
        if pending:
            await asyncio.wait(pending)

    async def drain(self, seconds: float) -> None:
        """At shutdown: let creates in flight finish (or undo themselves) before the store closes."""
        await drain_tasks(list(self._tasks.values()), seconds)


class Steps:
    """Runs teardown steps to the end, logging failures and keeping the first."""

    def __init__(self, owner_id: str, message: str, logger: logging.Logger = log) -> None:
        self.owner_id = owner_id
        self.message = message  # what a failed step logs
        self.log = logger
        self.first: BaseException | None = None

    def _failed(self, step: str, exc: Exception) -> bool:
        self.log.warning(self.message, extra=fields(id=self.owner_id, step=step, error=str(exc)))
        self.first = self.first or exc
        return False

    async def run(self, step: str, work: Awaitable[object]) -> bool:
        try:
            await work
        except Exception as exc:
            return self._failed(step, exc)
        return True

    def call(self, step: str, fn: Callable[..., object], *args: object) -> bool:
        try:
            fn(*args)
        except Exception as exc:
            return self._failed(step, exc)
        return True

    def raise_first(self) -> None:
        if self.first is not None:
            raise self.first
