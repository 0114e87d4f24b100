"""A streaming session's pumps run side by side: the first failure ends them all.

Attach and port-forward each copy bytes in a few tasks at once (client to
container, container to client, terminal resizes). The session lasts until
the tasks it needs are done; an error in any task ends it at once, and
whatever still runs is cancelled and reaped before the caller goes on, so no
task outlives its socket.
"""

import asyncio
from collections.abc import Collection, Sequence
from typing import Any


async def run_pumps(
    tasks: Sequence[asyncio.Future[Any]],
    needed: Collection[asyncio.Future[Any]] | None = None,
    *,
    cancelled_is_error: bool = False,
) -> None:
    """Wait until every task of ``needed`` (default: all ``tasks``) is done, raising the first
    error of any task; then cancel and reap them all. A task that ended cancelled has simply
    ended, unless ``cancelled_is_error`` (then its CancelledError is raised like any error)."""
    waiting = set(tasks if needed is None else needed)
    try:
        pending = set(tasks)
        while waiting:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                waiting.discard(t)
                error = None if t.cancelled() and not cancelled_is_error else t.exception()
                if error is not None:
                    raise error
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
