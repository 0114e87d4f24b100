"""A pull's worker threads run below the event loop's priority, and their results reach the loop."""

import asyncio
import os
import threading

import pytest

from cri.images.stream import WORKER_NICE, in_thread


def _own_nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


async def test_worker_runs_niced_and_the_loop_does_not() -> None:
    loop_nice = _own_nice()
    worker_nice = await asyncio.shield(in_thread(_own_nice, "test-worker"))
    assert worker_nice >= WORKER_NICE
    assert worker_nice >= loop_nice
    assert _own_nice() == loop_nice  # the event loop's thread is untouched


async def test_worker_exception_reaches_the_loop() -> None:
    def fail() -> None:
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        await asyncio.shield(in_thread(fail, "test-worker"))
