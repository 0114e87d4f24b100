"""The SPDY/3.1 session, driven over in-memory transports by a raw frame peer or a client session."""

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from cri.streaming import spdy_client
from cri.streaming import spdy_frames as f
from cri.streaming.spdy_frames import Data, GoAway, Ping, RstStream, SynReply, SynStream
from cri.streaming.spdy_session import (
    SessionClosed,
    SpdySession,
    Stream,
    StreamError,
    StreamReset,
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


async def test_ping_is_echoed_and_own_pings_complete(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.send(Ping(1))
    assert await peer.recv() == Ping(1)
    await peer.send(Ping(2))  # our parity, nothing pending: not echoed
    await peer.recv_nothing()
    pinging = asyncio.create_task(session.ping())
    assert await peer.recv() == Ping(2)
    await peer.send(Ping(2))
    assert await pinging >= 0


async def test_stream_open_data_and_fin_both_ways(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.open(1, streamtype="stdin", port="80")
    stream = await accept(session)
    assert (stream.id, stream.header("StreamType"), stream.header("port"), stream.header("nope")) == (
        1,
        "stdin",
        "80",
        None,
    )
    await peer.send(Data(1, b"hello "), Data(1, b"world"), Data(1, b"", f.FLAG_FIN))
    await settle()
    assert await stream.read() == b"hello world"
    assert await stream.read() == b""
    assert await stream.read() == b""
    await stream.write(b"out")
    assert await peer.recv() == Data(1, b"out")
    assert session.open_streams == 1
    await stream.close()
    await stream.close()  # idempotent
    assert await peer.recv() == Data(1, b"", f.FLAG_FIN)
    assert session.open_streams == 0, "finished both ways: forgotten"
    with pytest.raises(StreamError, match="closed for writing"):
        await stream.write(b"late")
    await peer.send(Data(1, b"after fin"))  # dropped
    await peer.send(Ping(5))
    assert await peer.recv() == Ping(5)
    assert session.buffered == 0


async def test_writes_are_chunked_and_never_wait_for_a_window(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    session.write_chunk = 1000
    await peer.send(f.Settings((f.Setting(7, 1),)), f.WindowUpdate(0, 1))  # a window of one byte: ignored
    await peer.open(1)
    stream = await accept(session)
    await stream.write(b"x" * 2500)
    assert [await peer.recv() for _ in range(3)] == [Data(1, b"x" * 1000), Data(1, b"x" * 1000), Data(1, b"x" * 500)]
    await stream.write(b"")  # nothing sent
    await peer.recv_nothing()


async def test_syn_stream_with_fin_and_unidirectional(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.send(SynStream(1, {"a": ["1"]}, flags=f.FLAG_FIN))
    assert await peer.recv() == SynReply(1)
    stream = await accept(session)
    assert await stream.read() == b""
    await peer.send(SynStream(3, {}, flags=f.FLAG_UNIDIRECTIONAL))
    uni = await accept(session)
    await peer.recv_nothing()  # no SYN_REPLY for a unidirectional stream
    with pytest.raises(StreamError, match="closed for writing"):
        await uni.write(b"x")
    await peer.send(f.HeadersFrame(3, {"late": ["yes"]}), Data(3, b"data", f.FLAG_FIN))
    assert await uni.read() == b"data"
    assert uni.header("late") is None, "HEADERS frames are not kept"


async def test_reset_by_peer(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.open(1)
    stream = await accept(session)
    await peer.send(Data(1, b"read"))
    await settle()
    assert await stream.read() == b"read"
    await peer.send(Data(1, b"sent before the reset"), RstStream(1, f.RstStatus.CANCEL))
    await settle()
    # as spdystream: what came before the peer's RST is read, then the stream ends (kubelet resets
    # every stream right after writing the exit status on the error stream)
    assert await stream.read() == b"sent before the reset"
    assert await stream.read() == b""
    with pytest.raises(StreamReset, match="reset by the peer: CANCEL") as e:
        await stream.write(b"x")
    assert e.value.status == f.RstStatus.CANCEL and e.value.by_peer
    await stream.close()  # a no-op now
    assert session.buffered == 0 and session.open_streams == 0
    stream.reset()  # nothing sent for a stream already reset
    await peer.recv_nothing()


async def test_local_reset_drops_data_and_wakes_readers(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.open(1)
    stream = await accept(session)
    reader = asyncio.create_task(stream.read())
    await settle()
    stream.reset()
    assert await peer.recv() == RstStream(1, f.RstStatus.CANCEL)
    with pytest.raises(StreamReset, match="reset here"):
        await reader
    await peer.send(Data(1, b"in flight"))
    await peer.send(Ping(1))
    assert await peer.recv() == Ping(1)
    assert session.buffered == 0


async def test_bad_stream_ids_and_too_many_streams(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    session.max_streams = 2
    await peer.send(SynStream(2, {}))  # a server's id from the client
    assert await peer.recv() == RstStream(2, f.RstStatus.PROTOCOL_ERROR)
    await peer.open(5)
    await peer.send(SynStream(3, {}))  # ids must increase
    assert await peer.recv() == RstStream(3, f.RstStatus.PROTOCOL_ERROR)
    await peer.open(7)
    await peer.send(SynStream(9, {}))
    assert await peer.recv() == RstStream(9, f.RstStatus.REFUSED_STREAM)
    await peer.send(Data(11, b"never opened"))  # dropped
    assert [(await accept(session)).id for _ in range(2)] == [5, 7]
    await peer.send(Ping(1))
    assert await peer.recv() == Ping(1)


async def test_streams_nobody_accepts_are_bounded(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    session.max_streams = 2
    for sid in (1, 3):
        await peer.open(sid)
        await peer.send(RstStream(sid, f.RstStatus.CANCEL))  # gone from the table, still queued
    await peer.send(SynStream(5, {}))
    assert await peer.recv() == RstStream(5, f.RstStatus.REFUSED_STREAM)
    assert session.open_streams == 0
    assert await (await accept(session)).read() == b""  # reset by the peer: ended


async def test_close_sends_goaway_and_ends_everything(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.open(1)
    await peer.open(3)
    one = await accept(session)
    await peer.send(Data(1, b"buffered"))
    await settle()
    accepting = asyncio.create_task(session.accept_stream())  # gets stream 3, queued
    reading = asyncio.create_task(one.read())
    assert (await accepting).id == 3
    assert await reading == b"buffered"
    reading = asyncio.create_task(one.read())
    await asyncio.gather(session.close(), session.close())
    await session.close()
    assert await peer.recv() == GoAway(3, f.GoAwayStatus.OK)
    with pytest.raises(EOFError):
        await peer.recv()
    with pytest.raises(SessionClosed):
        await reading
    with pytest.raises(SessionClosed):
        await one.write(b"x")
    with pytest.raises(SessionClosed):
        await session.accept_stream()
    with pytest.raises(SessionClosed):
        await session.open_stream({})
    with pytest.raises(SessionClosed):
        await session.ping()
    assert session.closed and session.error is None


async def test_peer_vanishing_mid_stream(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.open(1)
    await peer.open(3)
    open_one, finished = await accept(session), await accept(session)
    await peer.send(Data(1, b"partial"), Data(3, b"whole", f.FLAG_FIN))
    await settle()
    accepting = asyncio.create_task(session.accept_stream())
    pinging = asyncio.create_task(session.ping())
    await settle()
    peer.end.close()
    async with asyncio.timeout(TIMEOUT):
        await session.wait_closed()
    assert await open_one.read() == b"partial", "what arrived is still delivered"
    with pytest.raises(SessionClosed, match="peer closed"):
        await open_one.read()
    assert await finished.read() == b"whole"
    assert await finished.read() == b"", "the peer's FIN came before it vanished"
    with pytest.raises(SessionClosed):
        await finished.write(b"x")
    with pytest.raises(SessionClosed):
        await accepting
    with pytest.raises(SessionClosed):
        await pinging


async def test_protocol_error_sends_goaway_and_ends(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    await peer.open(1)
    stream = await accept(session)
    await peer.end.write(bytes.fromhex("80020006 00000004 00000001"))  # a SPDY/2 PING
    assert await peer.recv() == GoAway(1, f.GoAwayStatus.PROTOCOL_ERROR)
    async with asyncio.timeout(TIMEOUT):
        await session.wait_closed()
    assert isinstance(session.error, f.ProtocolError)
    with pytest.raises(SessionClosed, match="protocol error: SPDY version 2"):
        await stream.read()


async def test_goaway_from_the_peer() -> None:
    ours, theirs = pipe()
    async with SpdySession(ours, client=True) as client:
        peer = RawPeer(theirs)
        opening = [asyncio.create_task(client.open_stream({"n": str(i)})) for i in range(3)]
        assert [await peer.recv() for _ in range(3)] == [SynStream(i, {"n": [str(i // 2)]}) for i in (1, 3, 5)]
        await peer.send(SynReply(1, {"ok": ["1"]}), GoAway(3))
        first = await opening[0]
        assert first.reply_headers == {"ok": ["1"]}
        with pytest.raises(StreamReset, match="REFUSED_STREAM"):
            await opening[2]  # above the last good id: the peer never saw it
        await peer.send(SynReply(3))
        await opening[1]
        with pytest.raises(SessionClosed, match="going away"):
            await client.open_stream({})
        with pytest.raises(SessionClosed, match="GOAWAY"):
            await client.accept_stream()
        await peer.send(Data(1, b"still flowing", f.FLAG_FIN))
        assert await first.read() == b"still flowing"
        assert client.goaway_received and not client.closed


async def test_open_stream_refused_by_rst() -> None:
    ours, theirs = pipe()
    async with SpdySession(ours, client=True) as client:
        peer = RawPeer(theirs)
        opening = asyncio.create_task(client.open_stream({}))
        assert await peer.recv() == SynStream(1)
        await peer.send(RstStream(1, f.RstStatus.REFUSED_STREAM))
        with pytest.raises(StreamReset):
            await opening
        opening = asyncio.create_task(client.open_stream({}))
        assert await peer.recv() == SynStream(3)
        opening.cancel()  # giving up on the reply resets the stream
        assert await peer.recv() == RstStream(3, f.RstStatus.CANCEL)


async def test_backpressure_stops_reading_the_transport(server: tuple[SpdySession, RawPeer]) -> None:
    """An unread stream holds at most its limit plus one frame, and the session stops reading.

    PINGs behind the blocked frame wait too (documented); reading the stream, or
    resetting it, resumes everything.
    """
    session, peer = server
    session.max_stream_buffer = 1000
    await peer.open(1)
    stream = await accept(session)
    for _ in range(10):
        await peer.send(Data(1, b"x" * 400))
    await peer.send(Ping(1))
    await settle()
    assert stream.buffered == 1200 and session.buffered == 1200
    assert peer.end.peer.inbox.qsize() == 7, "the rest stays in the transport"
    await peer.recv_nothing()
    assert len(await stream.read()) == 1200
    await settle()
    assert stream.buffered == 1200
    received = 1200
    while received < 4000:
        received += len(await stream.read())
    assert received == 4000
    assert await peer.recv() == Ping(1)
    for _ in range(10):
        await peer.send(Data(1, b"y" * 400))
    await peer.send(Ping(3))
    await settle()
    assert stream.buffered == 1200
    stream.reset()
    got = [await peer.recv(), await peer.recv()]
    assert RstStream(1, f.RstStatus.CANCEL) in got
    assert Ping(3) in got, "a reset stream's data is dropped, not buffered"
    assert session.buffered == 0


async def test_session_budget_spans_streams(server: tuple[SpdySession, RawPeer]) -> None:
    session, peer = server
    session.max_session_buffer = 1000
    await peer.open(1)
    await peer.open(3)
    one, three = await accept(session), await accept(session)
    await peer.send(Data(1, b"a" * 600), Data(3, b"b" * 600), Data(3, b"c" * 10), Ping(1))
    await settle()
    assert (one.buffered, three.buffered, session.buffered) == (600, 600, 1200)
    await peer.recv_nothing()
    assert await one.read() == b"a" * 600
    assert await peer.recv() == Ping(1)
    assert await three.read() == b"b" * 600 + b"c" * 10


async def test_concurrent_writers_do_not_interleave() -> None:
    ours, theirs = pipe(pieces=3)  # every write is three awaited pieces
    async with SpdySession(ours) as session:
        peer = RawPeer(theirs)
        for sid in (1, 3, 5):
            await peer.send(SynStream(sid, {}))
        streams = [await accept(session) for _ in range(3)]

        async def writer(stream: Stream, name: str) -> None:
            for i in range(30):
                await stream.write(f"{name}-{i};".encode())

        tasks = [asyncio.create_task(writer(s, f"{s.id}.{w}")) for s in streams for w in range(3)]
        pinging = asyncio.create_task(session.ping())  # a control frame among the data
        frames = [await peer.recv() for _ in range(3 + 3 * 3 * 30 + 1)]
        await peer.send(Ping(2))
        await asyncio.gather(*tasks, pinging)
    assert Ping(2) in frames
    data = [fr for fr in frames if isinstance(fr, Data)]
    assert all(fr.data.count(b";") == 1 for fr in data), "each frame holds one whole write"
    for sid in (1, 3, 5):
        for w in range(3):
            mine = [fr.data for fr in data if fr.data.startswith(f"{sid}.{w}-".encode())]
            assert mine == [f"{sid}.{w}-{i};".encode() for i in range(30)]
            assert all(fr.stream_id == sid for fr in data if fr.data.startswith(f"{sid}.".encode()))


async def test_a_writer_stuck_on_a_vanished_peer_is_woken() -> None:
    ours, theirs = pipe()
    async with SpdySession(ours, close_timeout=0.05) as session:
        peer = RawPeer(theirs)
        await peer.open(1)
        stream = await accept(session)
        ours.blocked.clear()  # the peer stops reading
        stuck = asyncio.create_task(stream.write(b"x"))
        queued = asyncio.create_task(stream.write(b"y"))
        await settle()
        assert not stuck.done()
        await session.close()  # the GOAWAY times out, then the transport closes
        for task in (stuck, queued):
            with pytest.raises(SessionClosed):
                await task


async def test_client_and_server_sessions_exec(pair: tuple[SpdySession, SpdySession]) -> None:
    server, client = pair
    streams = await spdy_client.exec_streams(client, stdin=True, stdout=True, stderr=True)
    assert list(streams) == ["error", "stdin", "stdout", "stderr"]
    got = {s.header("streamtype"): s for s in [await accept(server) for _ in range(4)]}
    assert [s.id for s in got.values()] == [1, 3, 5, 7]
    await streams["stdin"].write(b"echo me")
    await streams["stdin"].close()
    data = b"".join([chunk async for chunk in got["stdin"]])
    await got["stdout"].write(data)
    await got["stdout"].close()
    await got["error"].write(b'{"status":"Success"}')
    await got["error"].close()
    assert await streams["stdout"].read() == b"echo me"
    assert await streams["stdout"].read() == b""
    assert await streams["error"].read() == b'{"status":"Success"}'
    assert await client.ping() >= 0
    assert await server.ping() >= 0


async def test_tty_streams_and_port_forward(pair: tuple[SpdySession, SpdySession]) -> None:
    server, client = pair
    streams = await spdy_client.exec_streams(client, stdin=True, tty=True)
    assert list(streams) == ["error", "stdin", "stdout", "resize"]
    for _ in streams:
        await accept(server)
    data, error = await spdy_client.port_forward_streams(client, 8080, 7)
    s_error, s_data = await accept(server), await accept(server)
    assert s_error.headers == {"streamtype": ["error"], "port": ["8080"], "requestid": ["7"]}
    assert s_data.header("streamtype") == "data" and s_data.header("requestid") == "7"
    assert await s_error.read() == b"", "the client half-closes the error stream"
    await s_error.write(b"connection refused")
    await s_error.close()
    assert await error.read() == b"connection refused"
    assert await error.read() == b""
    await data.write(b"GET /")
    assert await s_data.read() == b"GET /"
    server_opened = await server.open_stream({"from": "server"})
    assert server_opened.id == 2 and (await accept(client)).header("from") == "server"


async def test_connect_upgrades_over_tcp() -> None:
    served: list[SpdySession] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if b"/forbidden" in head:
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
            await writer.drain()
            writer.close()
            return
        assert b"Upgrade: SPDY/3.1" in head and b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
            b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
        )
        session = SpdySession(spdy_client.StreamTransport(reader, writer))
        served.append(session)
        session.start()
        stream = await session.accept_stream()
        await stream.write((await stream.read()).upper())
        await stream.close()

    tcp = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = tcp.sockets[0].getsockname()[1]
    async with tcp:
        conn = await spdy_client.connect(f"http://127.0.0.1:{port}/exec/token")
        assert conn.protocol == "v4.channel.k8s.io"
        stream = await conn.session.open_stream({"streamtype": "stdout"})
        await stream.write(b"shout")
        assert await stream.read() == b"SHOUT"
        assert await stream.read() == b""
        await conn.close()
        async with asyncio.timeout(TIMEOUT):
            await served[0].wait_closed()
        assert served[0].goaway_received
        with pytest.raises(spdy_client.UpgradeFailed, match="403 Forbidden: b'nope'"):
            await spdy_client.connect(f"http://127.0.0.1:{port}/forbidden")
