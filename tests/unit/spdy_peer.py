"""The SPDY session tests' peers: an in-memory duplex pipe, a far end speaking hand-made frames, and
the fixtures of a server session (``server``) and of a server and client pair (``pair``)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cri.streaming import spdy_frames as f
from cri.streaming.spdy_frames import SynReply, SynStream
from cri.streaming.spdy_session import (
    SpdySession,
    Stream,
)

TIMEOUT = 5.0


class Pipe:
    """One end of an in-memory duplex pipe; ``pieces`` > 1 makes each write several awaited chunks."""

    def __init__(self, pieces: int = 1) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.peer: Pipe = self
        self.closed = False
        self.pieces = pieces
        self.blocked = asyncio.Event()  # clear: writes wait (a peer that reads nothing)
        self.blocked.set()

    async def read(self) -> bytes:
        if self.closed:
            return b""
        return await self.inbox.get()

    async def write(self, data: bytes) -> None:
        step = -(-len(data) // self.pieces)
        for i in range(0, len(data), step):
            await self.blocked.wait()
            if self.closed or self.peer.closed:
                raise ConnectionResetError("pipe closed")
            self.peer.inbox.put_nowait(data[i : i + step])
            await asyncio.sleep(0)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.inbox.put_nowait(b"")
            self.peer.inbox.put_nowait(b"")
            self.blocked.set()


def pipe(pieces: int = 1) -> tuple[Pipe, Pipe]:
    a, b = Pipe(pieces), Pipe(pieces)
    a.peer, b.peer = b, a
    return a, b


class RawPeer:
    """The far end, speaking hand-made frames."""

    def __init__(self, end: Pipe) -> None:
        self.end = end
        self.compressor = f.HeaderCompressor()
        self.parser = f.FrameParser()
        self.frames: list[f.Frame] = []
        self.eof = False

    async def send(self, *frames: f.Frame) -> None:
        for frame in frames:
            await self.end.write(f.encode_frame(frame, self.compressor))

    async def recv(self) -> f.Frame:
        async with asyncio.timeout(TIMEOUT):
            while not self.frames:
                data = await self.end.read()
                if not data:
                    self.eof = True
                    raise EOFError
                self.frames += self.parser.feed(data)
        return self.frames.pop(0)

    async def recv_nothing(self) -> None:
        """Nothing arrives for a while."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.05):
                frame = await self.recv()
                raise AssertionError(f"unexpected {frame}")

    async def open(self, stream_id: int, **headers: str) -> None:
        await self.send(SynStream(stream_id, {k: [v] for k, v in headers.items()}))
        assert await self.recv() == SynReply(stream_id, {})


@pytest.fixture
async def server() -> AsyncIterator[tuple[SpdySession, RawPeer]]:
    ours, theirs = pipe()
    session = SpdySession(ours)
    session.start()
    yield session, RawPeer(theirs)
    await session.close()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[SpdySession, SpdySession]]:
    a, b = pipe()
    async with SpdySession(a) as server, SpdySession(b, client=True) as client:
        yield server, client


async def accept(session: SpdySession) -> Stream:
    async with asyncio.timeout(TIMEOUT):
        return await session.accept_stream()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)
