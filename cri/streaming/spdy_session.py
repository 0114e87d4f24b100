"""An asyncio SPDY/3.1 session over a byte transport, for either end of a connection.

It behaves like moby/spdystream, the library at the other end (kubelet,
kubectl, crictl): each SYN_STREAM gets an empty SYN_REPLY before
`accept_stream` hands the stream out (spdystream drops DATA on streams it has
not replied to, so `open_stream` waits for the reply); no flow control
(SETTINGS and WINDOW_UPDATE are ignored, a write waits for the transport
only); PINGs of the peer's parity are echoed.

Backpressure: DATA for a stream holding ``max_stream_buffer`` unread bytes, or
while all streams hold ``max_session_buffer``, stops the read loop until the
application reads, so TCP slows the peer: all that a protocol without flow
control allows. Nothing else is read meanwhile: PINGs wait (spdystream only
logs a failed ping), and other streams too, as with spdystream's stalled frame
workers. Reset a stream nobody will read: DATA for a reset stream is dropped.
Memory is bounded by the two limits, one frame being parsed and ``max_streams``.

Writes take one lock and hand each whole frame to one `Transport.write`, so
frames never interleave and header blocks go out in their zlib order.
"""

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Protocol

from cri.streaming import spdy_frames as fr
from cri.streaming.spdy_frames import Frame, HeaderInput, Headers, RstStatus

log = logging.getLogger(__name__)

DEFAULT_STREAM_BUFFER = 1 << 20
DEFAULT_SESSION_BUFFER = 16 << 20
DEFAULT_MAX_STREAMS = 256
DEFAULT_WRITE_CHUNK = 64 * 1024  # payload of each DATA frame sent
DEFAULT_CLOSE_TIMEOUT = 5.0  # for the GOAWAY: a peer that reads nothing must not hold up close()
_MAX_ID = 0x7FFFFFFF


class Transport(Protocol):
    """Bytes both ways (a socket, a WebSocket's binary messages); `read` gives b"" at the end.

    `write` must send all of ``data`` or none, even when cancelled: half a frame breaks the connection.
    `cri.streaming.spdy_client.StreamTransport` adapts an asyncio stream pair.
    """

    async def read(self) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class StreamError(ConnectionError):
    """A stream can carry no more data in the direction asked for."""


class StreamReset(StreamError):
    def __init__(self, stream_id: int, status: int, *, by_peer: bool) -> None:
        name = RstStatus(status).name if 0 < status <= len(RstStatus) else str(status)
        super().__init__(f"stream {stream_id} reset {'by the peer' if by_peer else 'here'}: {name}")
        self.stream_id, self.status, self.by_peer = stream_id, status, by_peer


class SessionClosed(StreamError):
    """The session ended: closed here, closed by the peer, or the connection was lost."""


def _headers(headers: HeaderInput) -> Headers:
    return {k.lower(): [v] if isinstance(v, str) else list(v) for k, v in headers.items()}


class Stream:
    """One SPDY stream: bytes both ways, each direction ended by its sender's FIN."""

    def __init__(self, session: "SpdySession", stream_id: int, headers: Headers) -> None:
        self.id = stream_id
        self.headers = headers  # the SYN_STREAM's
        self.reply_headers: Headers = {}  # the SYN_REPLY's, for streams opened here
        self.replied = False
        self.local_closed = False  # our FIN sent, or a unidirectional stream opened by the peer
        self.remote_closed = False  # the peer's FIN received
        self.buffered = 0  # bytes received, not yet read
        self._session = session
        self._chunks: collections.deque[bytes] = collections.deque()
        self._readable = asyncio.Event()
        self._reply_event = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._reset: tuple[int, bool] | None = None  # (status, by_peer)
        self._lost: str | None = None  # why the session ended

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name``."""
        values = self.headers.get(name.lower())
        return values[0] if values else default

    @property
    def receiving(self) -> bool:
        return not self.remote_closed and self._reset is None and self._lost is None

    async def read(self) -> bytes:
        """Every byte buffered, waiting for some; b"" after the peer's FIN.

        A reset by the peer reads as the end, after the bytes that came before
        it, as spdystream's Read does: kubelet resets every stream of a
        session right after writing the status. `StreamReset` once reset here
        (unread bytes are dropped); `SessionClosed` if the session ended
        before the peer's FIN (after the bytes that did arrive).
        """
        while not self._chunks:
            if self.remote_closed and self._reset is None:
                return b""
            if self._reset is not None and self._reset[1]:
                return b""
            if (error := self._dead()) is not None:
                raise error
            self._readable.clear()
            await self._readable.wait()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._consumed(len(data))
        return data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while data := await self.read():
            yield data

    async def write(self, data: bytes) -> None:
        """Send ``data`` in DATA frames; waits for the transport only (there is no flow control)."""
        self._check_writable()
        view = memoryview(data)
        step = self._session.write_chunk
        async with self._write_lock:  # one write's frames stay contiguous within the stream
            for offset in range(0, len(view), step):
                self._check_writable()
                await self._session._send(fr.Data(self.id, bytes(view[offset : offset + step])))

    async def close(self) -> None:
        """Half-close: send FIN (an empty DATA frame); idempotent, a no-op once reset or ended."""
        async with self._write_lock:
            if self.local_closed or self._reset is not None or self._lost is not None:
                return
            self.local_closed = True
            with contextlib.suppress(SessionClosed):
                await self._session._send(fr.Data(self.id, b"", fr.FLAG_FIN))
        self._session._forget_if_done(self)

    def reset(self, status: int = RstStatus.CANCEL) -> None:
        """Abort both directions with RST_STREAM: unread bytes are dropped, pending reads and writes fail."""
        if self._reset is not None or self._lost is not None or (self.local_closed and self.remote_closed):
            return
        self._on_reset(status, by_peer=False)
        self._session._forget(self)
        self._session._send_soon(fr.RstStream(self.id, status))

    async def wait_reply(self) -> Headers:
        """The SYN_REPLY's headers, once it has come (streams opened here)."""
        await self._reply_event.wait()
        if self._reset is not None or not self.replied:
            raise self._dead() or SessionClosed("session ended")
        return self.reply_headers

    def _dead(self) -> StreamError | None:
        """Why the stream can carry nothing more, if it cannot (a fresh exception each time)."""
        if self._reset is not None:
            return StreamReset(self.id, self._reset[0], by_peer=self._reset[1])
        return None if self._lost is None else SessionClosed(self._lost)

    def _check_writable(self) -> None:
        if (error := self._dead()) is not None:
            raise error
        if self.local_closed:
            raise StreamError(f"stream {self.id} is closed for writing")

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self.buffered += len(data)
        self._session.buffered += len(data)
        self._readable.set()

    def _consumed(self, n: int) -> None:
        self.buffered -= n
        self._session.buffered -= n
        self._session._drained.set()

    def _on_remote_fin(self) -> None:
        self.remote_closed = True
        self._readable.set()
        self._session._forget_if_done(self)

    def _on_reset(self, status: int, *, by_peer: bool) -> None:
        self._reset = (status, by_peer)
        if not by_peer:  # reset here: nobody reads what is left
            self._chunks.clear()
            self._consumed(self.buffered)
        self._readable.set()
        self._reply_event.set()

    def _on_lost(self, reason: str) -> None:
        self._lost = reason
        self._readable.set()
        self._reply_event.set()


class SpdySession:
    """One SPDY/3.1 connection. A server (``client=False``) takes odd stream ids from the peer and opens even ones."""

    def __init__(
        self,
        transport: Transport,
        *,
        client: bool = False,
        max_stream_buffer: int = DEFAULT_STREAM_BUFFER,
        max_session_buffer: int = DEFAULT_SESSION_BUFFER,
        max_streams: int = DEFAULT_MAX_STREAMS,
        write_chunk: int = DEFAULT_WRITE_CHUNK,
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        parser: fr.FrameParser | None = None,
    ) -> None:
        self.max_stream_buffer = max_stream_buffer
        self.max_session_buffer = max_session_buffer
        self.max_streams = max_streams
        self.write_chunk = write_chunk
        self.close_timeout = close_timeout
        self.buffered = 0  # unread bytes of every stream
        self.goaway_received = False
        self.error: BaseException | None = None  # what ended the session, unless close() did
        self._transport = transport
        self._parser = parser or fr.FrameParser()
        self._compressor = fr.HeaderCompressor()
        self._own = 1 if client else 0  # parity of the stream and ping ids this end picks
        self._next_id = 2 - self._own
        self._next_peer_id = 1 + self._own  # the lowest id the peer may open next
        self._last_peer_id = 0  # the last stream of the peer's accepted, for GOAWAY
        self._next_ping = 2 - self._own
        self._streams: dict[int, Stream] = {}
        self._accepted: asyncio.Queue[Stream | None] = asyncio.Queue()
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._write_lock = asyncio.Lock()
        self._open_lock = asyncio.Lock()
        self._drained = asyncio.Event()
        self._ended_event = asyncio.Event()
        self._ended: str | None = None
        self._closing = False
        self._no_more_streams = False
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "SpdySession":
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        return self._ended is not None

    @property
    def open_streams(self) -> int:
        """Streams not yet finished both ways nor reset."""
        return len(self._streams)

    def start(self) -> None:
        """Start reading frames (once)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read_loop(), name="spdy-read")

    async def accept_stream(self) -> Stream:
        """The next stream the peer opened, already replied to; `SessionClosed` once no more can come."""
        stream = await self._accepted.get()
        if stream is None:
            self._accepted.put_nowait(None)  # for the next caller
            raise SessionClosed(self._ended or "the peer sent GOAWAY")
        return stream

    async def open_stream(self, headers: HeaderInput, *, fin: bool = False, wait_reply: bool = True) -> Stream:
        """Send SYN_STREAM; with ``wait_reply``, return once the peer's SYN_REPLY came (as spdystream needs)."""
        stream: Stream | None = None
        try:
            async with self._open_lock:  # ids must reach the wire in increasing order
                self._check_open()
                if self._next_id > _MAX_ID:
                    raise SessionClosed("stream ids used up")
                stream = Stream(self, self._next_id, _headers(headers))
                self._next_id += 2
                stream.local_closed = fin
                self._streams[stream.id] = stream
                await self._send(fr.SynStream(stream.id, stream.headers, flags=fr.FLAG_FIN if fin else 0))
            if wait_reply:
                await stream.wait_reply()
        except BaseException:
            if stream is not None:
                stream.reset()  # given up on (cancelled, refused): the peer may have it
            raise
        return stream

    async def ping(self) -> float:
        """Seconds for a PING to come back; wrap in `asyncio.timeout`, a peer may never answer."""
        self._check_open()
        loop = asyncio.get_running_loop()
        ping_id = self._next_ping
        self._next_ping = ping_id + 2 if ping_id + 2 <= _MAX_ID else 2 - self._own
        done = self._pings[ping_id] = loop.create_future()
        start = loop.time()
        try:
            await self._send(fr.Ping(ping_id))
            await done
        finally:
            self._pings.pop(ping_id, None)
        return loop.time() - start

    async def close(self, status: int = fr.GoAwayStatus.OK) -> None:
        """GOAWAY, then close the transport: every pending read and write ends. Idempotent."""
        if self._closing:
            await self._ended_event.wait()
            return
        self._closing = True
        try:
            if self._ended is None:
                await self._goaway(status)
        finally:
            self._end("session closed")
            reader = self._reader
            if reader is not None and reader is not asyncio.current_task() and not reader.done():
                reader.cancel()
                await asyncio.wait([reader])

    async def wait_closed(self) -> None:
        await self._ended_event.wait()

    def _check_open(self) -> None:
        if self._ended is not None:
            raise SessionClosed(self._ended)
        if self._closing or self.goaway_received:
            raise SessionClosed("session going away")

    async def _send(self, frame: Frame) -> None:
        async with self._write_lock:
            if self._ended is not None:
                raise SessionClosed(self._ended)
            data = fr.encode_frame(frame, self._compressor)
            try:
                await self._transport.write(data)
            except OSError as e:
                if self._ended is None:
                    self.error = e
                self._end(f"connection lost: {e}")
                raise SessionClosed(f"connection lost: {e}") from e

    def _send_soon(self, frame: Frame) -> None:
        """Send from sync code; the frame queues behind the writes already waiting."""
        if self._ended is None:
            task = asyncio.get_running_loop().create_task(self._send_quietly(frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_quietly(self, frame: Frame) -> None:
        with contextlib.suppress(SessionClosed):
            await self._send(frame)

    async def _goaway(self, status: int) -> None:
        with contextlib.suppress(SessionClosed, TimeoutError):
            async with asyncio.timeout(self.close_timeout):
                await self._send(fr.GoAway(self._last_peer_id, status))

    def _end(self, reason: str) -> None:
        if self._ended is not None:
            return
        self._ended = reason
        self._transport.close()
        for stream in self._streams.values():
            stream._on_lost(reason)
        self._streams.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(SessionClosed(reason))
        for task in self._tasks:
            task.cancel()
        self._stop_accepting()
        self._drained.set()
        self._ended_event.set()

    def _stop_accepting(self) -> None:
        if not self._no_more_streams:
            self._no_more_streams = True
            self._accepted.put_nowait(None)

    def _forget(self, stream: Stream) -> None:
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    def _forget_if_done(self, stream: Stream) -> None:
        if stream.local_closed and stream.remote_closed:
            self._forget(stream)

    async def _read_loop(self) -> None:
        reason = "session closed"
        try:
            while data := await self._transport.read():
                for frame in self._parser.feed(data):
                    await self._handle(frame)
            reason = "the peer closed the connection"
            self._parser.close()
        except fr.ProtocolError as e:
            log.debug("SPDY protocol error: %s", e)
            self.error, reason = e, f"protocol error: {e}"
            await self._goaway(fr.GoAwayStatus.PROTOCOL_ERROR)
        except SessionClosed as e:  # a reply failed: _send already ended the session
            reason = str(e)
        except OSError as e:
            self.error, reason = e, f"connection lost: {e}"
        except Exception as e:
            log.exception("SPDY session failed")
            self.error, reason = e, f"internal error: {e}"
            await self._goaway(fr.GoAwayStatus.INTERNAL_ERROR)
        finally:
            self._end(reason)

    async def _handle(self, frame: Frame) -> None:
        match frame:
            case fr.Data():
                await self._on_data(frame)
            case fr.SynStream():
                await self._on_syn_stream(frame)
            case fr.SynReply():
                stream = self._streams.get(frame.stream_id)
                if stream is not None and stream.id % 2 == self._own and not stream.replied:
                    stream.reply_headers, stream.replied = frame.headers, True
                    stream._reply_event.set()
                    if frame.fin:
                        stream._on_remote_fin()
            case fr.HeadersFrame():
                # only FIN counts: no Kubernetes peer sends HEADERS, and keeping
                # them would let a peer grow a stream's headers without bound
                stream = self._streams.get(frame.stream_id)
                if stream is not None and frame.fin:
                    stream._on_remote_fin()
            case fr.RstStream():
                stream = self._streams.pop(frame.stream_id, None)
                if stream is not None:
                    stream._on_reset(frame.status, by_peer=True)
            case fr.Ping():
                if frame.ping_id % 2 != self._own:
                    await self._send(frame)  # the peer's ping: echo it
                elif (waiter := self._pings.get(frame.ping_id)) is not None and not waiter.done():
                    waiter.set_result(None)
            case fr.GoAway():
                self._on_goaway(frame)
            case fr.Settings() | fr.WindowUpdate():
                pass  # no flow control: spdystream ignores both too

    async def _on_data(self, frame: fr.Data) -> None:
        stream = self._streams.get(frame.stream_id)
        if stream is None:
            return  # reset, finished or never opened: dropped, as spdystream does
        if frame.data and stream.receiving:
            # backpressure: stop reading the transport until the application reads
            while (
                stream.receiving
                and self._ended is None
                and (stream.buffered >= self.max_stream_buffer or self.buffered >= self.max_session_buffer)
            ):
                self._drained.clear()
                await self._drained.wait()
            if stream.receiving:
                stream._feed(frame.data)
        if frame.fin and stream.receiving:
            stream._on_remote_fin()

    async def _on_syn_stream(self, frame: fr.SynStream) -> None:
        sid = frame.stream_id
        if sid % 2 == self._own or sid < self._next_peer_id:
            await self._send(fr.RstStream(sid, RstStatus.PROTOCOL_ERROR))  # spdystream's answer too
            return
        self._next_peer_id = sid + 2
        if self._closing or max(len(self._streams), self._accepted.qsize()) >= self.max_streams:
            await self._send(fr.RstStream(sid, RstStatus.REFUSED_STREAM))
            return
        stream = Stream(self, sid, frame.headers)
        stream.replied, stream.local_closed, stream.remote_closed = True, frame.unidirectional, frame.fin
        stream._reply_event.set()
        self._streams[sid] = stream
        self._last_peer_id = sid
        if not frame.unidirectional:  # SPDY/3: a unidirectional stream gets no reply
            await self._send(fr.SynReply(sid))
        self._forget_if_done(stream)
        self._accepted.put_nowait(stream)

    def _on_goaway(self, frame: fr.GoAway) -> None:
        self.goaway_received = True
        for sid, stream in list(self._streams.items()):
            if sid % 2 == self._own and sid > frame.last_good_stream_id:
                del self._streams[sid]  # never seen by the peer
                stream._on_reset(RstStatus.REFUSED_STREAM, by_peer=True)
        self._stop_accepting()
