"""run_pumps: the session lasts until its needed tasks are done; the first error ends all."""

import asyncio

import pytest

from cri.runtime.pumps import run_pumps


async def forever() -> None:
    await asyncio.Event().wait()


async def fails() -> None:
    await asyncio.sleep(0)
    raise ConnectionResetError("the client went away")


async def self_cancelled() -> None:
    raise asyncio.CancelledError


async def test_needed_done_cancels_the_rest() -> None:
    main = asyncio.ensure_future(asyncio.sleep(0))
    other = asyncio.ensure_future(forever())
    await run_pumps([main, other], needed=[main])
    assert other.cancelled()


async def test_first_error_is_raised_and_the_rest_cancelled() -> None:
    main = asyncio.ensure_future(forever())
    bad = asyncio.ensure_future(fails())
    with pytest.raises(ConnectionResetError):
        await run_pumps([main, bad], needed=[main])
    assert main.cancelled()


async def test_a_cancelled_task_has_ended_unless_that_is_an_error() -> None:
    quiet = asyncio.ensure_future(self_cancelled())
    await run_pumps([quiet])
    loud = asyncio.ensure_future(self_cancelled())
    with pytest.raises(asyncio.CancelledError):
        await run_pumps([loud], cancelled_is_error=True)
