"""Bytes from the event loop to a worker thread, and results back.

A download runs on the event loop; what is done with its bytes (writing,
hashing, unpacking) runs in a thread of its own, so that the loop only moves
bytes. Between the two a bounded ``Pipe``: while the thread is behind, the
download waits without blocking the loop, and the data in flight stays small.
"""

import asyncio
import contextlib
import functools
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Cancelled(Exception):
    """The pull was cancelled while this layer was being applied."""


class PipeAborted(Cancelled):
    """The download was given up: the thread reading the pipe stops here."""


class PipeClosed(Exception):
    """The thread reading the pipe has stopped: the bytes have nowhere to go."""


def _settle(fut: "asyncio.Future[T]", result: T | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(result)  # type: ignore[arg-type]


def settle_from_thread(
    loop: asyncio.AbstractEventLoop, fut: "asyncio.Future[T]", result: T | None, exc: BaseException | None
) -> None:
    """Resolve ``fut`` (a future of ``loop``) from another thread."""
    with contextlib.suppress(RuntimeError):  # the loop is closed: the daemon is exiting, nobody waits
        loop.call_soon_threadsafe(_settle, fut, result, exc)


def _retrieve(fut: "asyncio.Future[Any]") -> None:
    if not fut.cancelled():
        fut.exception()  # retrieved: no "never retrieved" warning when a cleanup path only waits for it


def in_thread(fn: Callable[[], T], name: str) -> "asyncio.Future[T]":
    """Run ``fn`` in a new thread; its result as a future of the running loop.

    A thread per job rather than the default executor: a layer's pass waits
    on its download for as long as that takes, and must not hold one of the
    few executor threads the rest of the daemon uses meanwhile. Await it
    through ``asyncio.shield``: cancelling the future does not stop the
    thread, and a cleanup must wait for the thread itself."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    fut.add_done_callback(_retrieve)

    def run() -> None:
        try:
            result = fn()
        except BaseException as exc:
            settle_from_thread(loop, fut, None, exc)
        else:
            settle_from_thread(loop, fut, result, None)

    threading.Thread(target=run, name=name, daemon=True).start()
    return fut


class Pipe:
    """Chunks from the event loop to one reading thread, at most ``limit`` bytes queued."""

    def __init__(self, limit: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        self._cond = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._queued = 0
        self._eof = False
        self._aborted = False
        self._stopped = False
        self._space: asyncio.Future[None] | None = None

    # --- the event loop's side -----------------------------------------------

    async def put(self, data: bytes) -> None:
        """Queue ``data``, waiting while the queue is full; PipeClosed once the reader has stopped."""
        while True:
            with self._cond:
                if self._stopped:
                    raise PipeClosed()
                if self._queued < self._limit:
                    self._chunks.append(data)
                    self._queued += len(data)
                    self._cond.notify()
                    return
                space = self._space = self._loop.create_future()
            await space

    def close(self) -> None:
        """The end of the data: the reader gets b"" once it has read the rest."""
        with self._cond:
            self._eof = True
            self._cond.notify()

    def abort(self) -> None:
        """Given up: the reader's next ``get`` raises PipeAborted."""
        with self._cond:
            self._aborted = True
            self._chunks.clear()
            self._queued = 0
            self._cond.notify()

    # --- the thread's side ----------------------------------------------------

    def get(self) -> bytes:
        """The next chunk (blocking); b"" at the end."""
        with self._cond:
            while not self._chunks and not self._eof and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise PipeAborted()
            if not self._chunks:
                return b""
            data = self._chunks.popleft()
            self._queued -= len(data)
            self._wake()
        return data

    def stop(self) -> None:
        """The reader reads no more: a waiting or later ``put`` raises PipeClosed."""
        with self._cond:
            self._stopped = True
            self._wake()

    def _wake(self) -> None:  # with the lock held
        space, self._space = self._space, None
        if space is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(functools.partial(_settle, space, None, None))


def write_all(fd: int, data: memoryview) -> None:
    """All of ``data`` to ``fd`` (os.write may take less)."""
    while data:
        data = data[os.write(fd, data) :]
