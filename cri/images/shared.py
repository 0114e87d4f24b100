"""One task per key, awaited by any number of callers.

Concurrent pulls that need the same blob or the same snapshot share one
download or one unpack. The task is cancelled only when every caller
waiting for it has gone (a kubelet timing out one pull does not break
another pull of the same layer).
"""

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Entry(Generic[T]):
    def __init__(self, task: "asyncio.Task[T]") -> None:
        self.task = task
        self.waiters = 0


class SharedTasks(Generic[T]):
    def __init__(self) -> None:
        self._entries: dict[str, _Entry[T]] = {}

    def running(self) -> set[str]:
        return set(self._entries)

    async def run(self, key: str, factory: Callable[[], Awaitable[T]]) -> T:
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(asyncio.ensure_future(factory()))
            self._entries[key] = entry
            entry.task.add_done_callback(functools.partial(self._forget, key, entry))
        entry.waiters += 1
        try:
            return await asyncio.shield(entry.task)
        except asyncio.CancelledError:
            if not entry.task.done() and entry.waiters == 1:
                entry.task.cancel()
                # wait for its cleanup (partial files) before reporting the cancellation
                await asyncio.wait({entry.task})
            raise
        finally:
            entry.waiters -= 1

    def _forget(self, key: str, entry: _Entry[T], _task: object) -> None:
        if self._entries.get(key) is entry:
            del self._entries[key]
        if not entry.task.cancelled():
            entry.task.exception()  # retrieved: no "never retrieved" warning when nobody waits
