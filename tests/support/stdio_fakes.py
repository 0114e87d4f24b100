"""In-memory client streams for the streaming sessions' tests: what a client
reads (``Collect``), what it types (``Feed``) and its terminal sizes (``sizes``),
each standing in for the cri.runtime.stdio interfaces."""

import asyncio
from collections.abc import AsyncIterator

from cri.runtime.stdio import TerminalSize


class Collect:
    """A client's output stream: keeps (or only counts) what it gets; can be slow, stall or vanish."""

    def __init__(self, delay: float = 0.0, fail_after: int | None = None, keep: bool = True) -> None:
        self.data = bytearray()
        self.size = 0
        self.writes = 0
        self.biggest = 0
        self.closed = False
        self.delay, self.fail_after, self.keep = delay, fail_after, keep
        self.stall = asyncio.Event()
        self.stall.set()  # clear: writes wait (a client that reads nothing)
        self.got = asyncio.Event()

    async def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        if self.fail_after is not None and self.writes >= self.fail_after:
            raise ConnectionResetError("the client went away")
        self.writes += 1
        self.size += len(data)
        self.biggest = max(self.biggest, len(data))
        if self.keep:
            self.data += data
        self.got.set()
        await self.stall.wait()
        if self.delay:
            await asyncio.sleep(self.delay)

    async def close(self) -> None:
        self.closed = True

    async def wait_for(self, text: bytes) -> None:
        while text not in self.data:
            self.got.clear()
            await self.got.wait()


class Feed:
    """A client's stdin: what the test puts, then b"" once it ends."""

    def __init__(self, *chunks: bytes, end: bool = False) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        for c in chunks:
            self.queue.put_nowait(c)
        if end:
            self.end()

    def put(self, data: bytes) -> None:
        self.queue.put_nowait(data)

    def end(self) -> None:
        self.queue.put_nowait(b"")

    async def read(self) -> bytes:
        data = await self.queue.get()
        if not data:
            self.queue.put_nowait(b"")  # stays ended
        return data


async def sizes(*items: TerminalSize) -> AsyncIterator[TerminalSize]:
    for s in items:
        yield s
    await asyncio.Event().wait()  # the client keeps its resize stream open
