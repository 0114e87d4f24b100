"""The SPDY/3.1 session's flow: backpressure, the session's budget across streams, concurrent writers, a
writer stuck on a vanished peer, client and server sessions together, the upgrade over TCP."""

import asyncio

import pytest

from cri.streaming import spdy_client
from cri.streaming import spdy_frames as f
from cri.streaming.spdy_frames import Data, Ping, RstStream, SynStream
from cri.streaming.spdy_session import (
    SessionClosed,
    SpdySession,
    Stream,
)
from tests.unit.spdy_peer import TIMEOUT, RawPeer, accept, pair, pipe, server, settle

__all__ = ["pair", "server"]  # the fixtures


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
