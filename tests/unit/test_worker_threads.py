"""A pull's worker threads hand their results and errors to the event loop."""

import asyncio

import pytest

from cri.images.stream import in_thread


async def test_worker_exception_reaches_the_loop() -> None:
    def fail() -> None:
        raise ValueError("from the worker")

    with pytest.raises(ValueError, match="from the worker"):
        await asyncio.shield(in_thread(fail, "test-worker"))
