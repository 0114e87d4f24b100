"""The registry client's HTTP/1.1, on h11 (which the daemon loads for its streaming server already).

Why not aiohttp: its import costs a process about 6 MiB and 0.24 s (it builds two
SSL contexts as it loads), which the daemon kept for good after its first pull
and each pull's zygote paid at its start. This is what registry.py needs and no
more: one request at a time on a connection, kept-alive connections reused per
origin and TLS context, TLS through asyncio with the host's context, a connect
timeout and a timeout on each read, bodies streamed as they arrive. No redirect
is followed (registry.py follows them itself, so that credentials never go to
another origin), no proxy from the environment is used, no body is decompressed.
"""

import asyncio
import ssl as ssl_mod
from collections import deque
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import h11

CONNECT_SECONDS = 30.0
HIGH_BYTES = 4 * 1024 * 1024  # received and not yet read: past this, the socket is not read
IDLE_PER_ORIGIN = 8  # kept-alive connections kept per origin

SslArg = ssl_mod.SSLContext | bool | None  # None or False: plain; True: the system's CAs; or a context
_Key = tuple[str, str, int, int]  # scheme, host, port, id of the TLS context
_default_context: ssl_mod.SSLContext | None = None


class HttpError(Exception):
    """The connection could not be made, broke, or the peer broke HTTP/1.1."""


async def _system_context() -> ssl_mod.SSLContext:
    """The system's CAs, loaded once (50 ms of CPU: in a thread, not on the event loop) and only
    when an https host needs them."""
    global _default_context
    if _default_context is None:
        _default_context = await asyncio.to_thread(ssl_mod.create_default_context)
    return _default_context


class Headers:
    """A response's headers, by case-insensitive name; repeated ones joined with ", "."""

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in raw:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            self._values[key] = f"{self._values[key]}, {text}" if key in self._values else text

    def get(self, name: str, default: str = "") -> str:
        return self._values.get(name.lower(), default)

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values


class _Stream(asyncio.Protocol):
    """A connection's received bytes, kept as the pieces the transport gave (no copy, no join:
    asyncio's StreamReader copies each piece twice); reading pauses past ``HIGH_BYTES``."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._pieces: deque[bytes] = deque()
        self._size = 0
        self._paused = False
        self._eof = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._pieces.append(data)
        self._size += len(data)
        if self._size > HIGH_BYTES and not self._paused and self.transport is not None:
            self.transport.pause_reading()
            self._paused = True
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._error = exc
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    @property
    def at_eof(self) -> bool:
        return self._eof and not self._pieces

    async def read(self, seconds: float) -> bytes:
        """The next piece received (b"" at the end), waiting at most ``seconds`` for it."""
        while not self._pieces:
            if self._eof:
                if self._error is not None:
                    raise HttpError(f"connection broke: {self._error}")
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._waiter, seconds)
            finally:
                self._waiter = None
        data = self._pieces.popleft()
        self._size -= len(data)
        if self._paused and self._size <= HIGH_BYTES // 2 and self.transport is not None:
            self.transport.resume_reading()
            self._paused = False
        return data

    def unread(self, data: bytes) -> None:
        self._pieces.appendleft(data)
        self._size += len(data)


class _Connection:
    def __init__(self, transport: asyncio.Transport, stream: _Stream) -> None:
        self.transport = transport
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)

    def send(self, event: h11.Event) -> None:
        try:
            data = self.h11.send(event)
        except h11.ProtocolError as exc:
            raise HttpError(f"HTTP/1.1: {exc}") from None
        if data:
            self.transport.write(data)

    async def next_event(self, read_seconds: float) -> h11.Event | type[h11.PAUSED]:
        while True:
            try:
                event = self.h11.next_event()
            except h11.ProtocolError as exc:
                raise HttpError(f"HTTP/1.1: {exc}") from None
            if event is not h11.NEED_DATA:
                return cast(h11.Event | type[h11.PAUSED], event)
            self.h11.receive_data(await self.stream.read(read_seconds))

    def close(self) -> None:
        self.transport.close()


class Response:
    """A response whose body has not been read yet; ``release`` hands its connection back.

    A body of known length is read straight from the connection's received pieces, not through h11
    (which copies each piece three times, asyncio's StreamReader twice more): a 300 MB blob on
    loopback took 0.14 s of CPU so, 0.45-0.9 s through both, 0.19-0.37 s with aiohttp. The
    connection then gets a new h11 state for its next request."""

    def __init__(self, session: "Session", key: _Key, conn: _Connection, event: h11.Response, method: str) -> None:
        self._session = session
        self._key = key
        self._conn: _Connection | None = conn
        self._done = False
        self.status: int = event.status_code
        self.headers = Headers(list(event.headers))
        length = self.headers.get("Content-Length")
        chunked = "chunked" in self.headers.get("Transfer-Encoding").lower()
        self.content_length = int(length) if length.isdigit() and not chunked else None
        has_body = method != "HEAD" and self.status not in (204, 304)
        self._remaining = self.content_length if has_body and self.content_length is not None else None
        self._keep_alive = event.http_version == b"1.1" and "close" not in self.headers.get("Connection").lower()

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body, piece by piece as it arrives."""
        if self._remaining is not None:
            async for data in self._direct():
                yield data
            return
        while self._conn is not None and not self._done:
            event = await self._conn.next_event(self._session.read_timeout)
            if isinstance(event, h11.Data):
                data = event.data
                yield data if isinstance(data, bytes) else bytes(data)
            elif isinstance(event, h11.EndOfMessage):
                self._done = True
            else:
                raise HttpError("the connection closed before the end of the body")

    async def _direct(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None or self._done:
            return
        remaining = self._remaining
        assert remaining is not None
        buffered, _ = conn.h11.trailing_data  # what h11 was given past the response's head
        self._remaining = None  # the body is read once
        if buffered:
            if len(buffered) > remaining:
                self._keep_alive = False  # more than the body: the connection is not reused
                buffered = buffered[:remaining]
            remaining -= len(buffered)
            yield buffered
        while remaining:
            data = await conn.stream.read(self._session.read_timeout)
            if not data:
                raise HttpError(f"the connection closed {remaining} bytes before the end of the body")
            if len(data) > remaining:  # more than the body: kept, and the connection not reused
                conn.stream.unread(data[remaining:])
                data = data[:remaining]
                self._keep_alive = False
            remaining -= len(data)
            yield data
        self._done = True
        conn.h11 = h11.Connection(h11.CLIENT) if self._keep_alive else conn.h11

    def release(self) -> None:
        """The connection goes back to the session if the body was read to its end, else it is closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and conn.h11.our_state is h11.IDLE and conn.h11.their_state is h11.IDLE:
            self._session.keep(self._key, conn)  # a body read straight from the stream
        elif self._done and conn.h11.our_state is h11.DONE and conn.h11.their_state is h11.DONE:
            conn.h11.start_next_cycle()
            self._session.keep(self._key, conn)
        else:
            conn.close()

    async def __aenter__(self) -> "Response":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


class Session:
    """Requests to any number of origins, with their kept-alive connections."""

    def __init__(self, read_timeout: float, user_agent: str = "crid") -> None:
        self.read_timeout = read_timeout
        self._user_agent = user_agent
        self._idle: dict[_Key, list[_Connection]] = {}

    async def request(
        self, method: str, url: str, headers: Mapping[str, str] | None = None, body: bytes = b"", ssl: SslArg = None
    ) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HttpError(f"not an http(s) URL: {url[:200]!r}")
        context = None
        if parts.scheme == "https":
            context = ssl if isinstance(ssl, ssl_mod.SSLContext) else await _system_context()
        port = parts.port or (443 if context is not None else 80)
        key = (parts.scheme, parts.hostname, port, id(context))
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        fields = [("Host", parts.netloc), ("User-Agent", self._user_agent), *(headers or {}).items()]
        if body or method in ("POST", "PUT"):
            fields.append(("Content-Length", str(len(body))))
        request = h11.Request(method=method, target=target, headers=fields)
        while True:
            conn = self._take(key)
            reused = conn is not None
            if conn is None:
                conn = await self._connect(parts.hostname, port, context)
            try:
                conn.send(request)
                if body:
                    conn.send(h11.Data(data=body))
                conn.send(h11.EndOfMessage())
                event = await conn.next_event(self.read_timeout)
                while isinstance(event, h11.InformationalResponse):  # 100 Continue and the like
                    event = await conn.next_event(self.read_timeout)
            except asyncio.CancelledError:
                conn.close()
                raise
            except (HttpError, OSError, TimeoutError):
                conn.close()
                if reused:  # closed by the server while it was idle: once more, on a new connection
                    continue
                raise
            if not isinstance(event, h11.Response):
                conn.close()
                if reused:
                    continue
                raise HttpError(f"{parts.netloc} closed the connection without an answer")
            return Response(self, key, conn, event, method)

    async def get(self, url: str, headers: Mapping[str, str] | None = None, ssl: SslArg = None) -> Response:
        return await self.request("GET", url, headers, ssl=ssl)

    async def _connect(self, host: str, port: int, context: ssl_mod.SSLContext | None) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            transport, stream = await asyncio.wait_for(
                loop.create_connection(_Stream, host, port, ssl=context, server_hostname=host if context else None),
                CONNECT_SECONDS,
            )
        except OSError as exc:
            raise HttpError(f"cannot connect to {host}:{port}: {exc}") from None
        return _Connection(transport, stream)

    def _take(self, key: _Key) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if not conn.stream.at_eof:
                return conn
            conn.close()
        return None

    def keep(self, key: _Key, conn: _Connection) -> None:
        idle = self._idle.setdefault(key, [])
        if len(idle) < IDLE_PER_ORIGIN:
            idle.append(conn)
        else:
            conn.close()

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def __aenter__(self) -> "Session":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
