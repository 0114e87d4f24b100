"""The SPDY/3.1 session, driven over in-memory transports by a raw frame peer or a client session."""

import asyncio

import pytest

from cri.streaming import spdy_frames as f
from cri.streaming.spdy_frames import Data, GoAway, Ping, RstStream, SynReply, SynStream
from cri.streaming.spdy_session import (
    SessionClosed,
    SpdySession,
    StreamError,
    StreamReset,
)
from tests.unit.spdy_peer import TIMEOUT, RawPeer, accept, pipe, server, settle

__all__ = ["server"]  # the fixtures


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
