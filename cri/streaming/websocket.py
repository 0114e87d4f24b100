"""A server-side WebSocket (RFC 6455) over an asyncio stream pair, on wsproto.

wsproto does the framing and the handshake; this adds what a session needs:
whole messages (fragments joined, bounded in size), pings answered, sends
serialized by one lock, and a clean close in both directions.
"""

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
READ_BYTES = 64 * 1024

Message = bytes | str


class HandshakeRefused(Exception):
    """The request was not a usable WebSocket upgrade (answered already)."""


class WebSocket:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: WSConnection) -> None:
        self.reader = reader
        self.writer = writer
        self._conn = conn
        self._messages: deque[Message] = deque()
        self._parts: list[Message] = []
        self._size = 0
        self._closed = False  # a close frame was seen or sent, or the connection broke
        self._send_lock = asyncio.Lock()
        self.subprotocol: str | None = None

    @classmethod
    async def accept(
        cls,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        raw_request: bytes,
        choose: Callable[[list[str]], str | None],
    ) -> "WebSocket":
        """Answer the upgrade in ``raw_request`` (the request's bytes as read).
        ``choose`` picks one of the offered subprotocols (a client that offers
        none gets ``choose([])``); None refuses with 400, as Kubernetes does."""
        conn = WSConnection(ConnectionType.SERVER)
        try:
            conn.receive_data(raw_request)
            request = next((e for e in conn.events() if isinstance(e, Request)), None)
        except RemoteProtocolError as exc:
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await _drain_quietly(writer)
            raise HandshakeRefused(f"not a valid WebSocket upgrade: {exc}") from None
        if request is None:
            raise HandshakeRefused("not a WebSocket upgrade")
        chosen = choose(list(request.subprotocols))
        if chosen is None:
            writer.write(conn.send(RejectConnection(status_code=400)))
            await _drain_quietly(writer)
            raise HandshakeRefused(f"none of the offered subprotocols is supported: {request.subprotocols}")
        ws = cls(reader, writer, conn)
        ws.subprotocol = chosen or None
        writer.write(conn.send(AcceptConnection(subprotocol=chosen or None)))
        await writer.drain()
        return ws

    @property
    def closed(self) -> bool:
        return self._closed

    async def recv(self) -> Message | None:
        """The next whole message; None once the connection is closed."""
        while not self._messages:
            if self._closed:
                return None
            try:
                data = await self.reader.read(READ_BYTES)
            except ConnectionError:
                data = b""
            if not data:
                self._closed = True
                return None
            try:
                self._conn.receive_data(data)
                await self._process()
            except (RemoteProtocolError, LocalProtocolError, ConnectionError):
                self._closed = True
                return None
        return self._messages.popleft()

    async def _process(self) -> None:
        for event in self._conn.events():
            if isinstance(event, BytesMessage | TextMessage):
                self._size += len(event.data)
                if self._size > MAX_MESSAGE_BYTES:
                    await self.close(1009, "message too big")
                    raise ConnectionError("message over the size limit")
                self._parts.append(bytes(event.data) if isinstance(event.data, bytearray) else event.data)
                if event.message_finished:
                    parts, self._parts, self._size = self._parts, [], 0
                    if isinstance(event, BytesMessage):
                        self._messages.append(b"".join(p for p in parts if isinstance(p, bytes)))
                    else:
                        self._messages.append("".join(p for p in parts if isinstance(p, str)))
            elif isinstance(event, Ping):
                await self._send_raw(self._conn.send(event.response()))
            elif isinstance(event, CloseConnection) and not self._closed:
                self._closed = True
                with contextlib.suppress(LocalProtocolError):
                    await self._send_raw(self._conn.send(event.response()))

    async def send(self, message: Message) -> None:
        """Send one message; ConnectionError when the connection is gone."""
        if self._closed:
            raise ConnectionError("the WebSocket is closed")
        event = BytesMessage(data=message) if isinstance(message, bytes) else TextMessage(data=message)
        try:
            await self._send_raw(self._conn.send(event))
        except LocalProtocolError as exc:
            raise ConnectionError(f"the WebSocket is closed: {exc}") from None

    async def _send_raw(self, data: bytes) -> None:
        async with self._send_lock:
            self.writer.write(data)
            await self.writer.drain()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once) and close the connection."""
        if not self._closed:
            self._closed = True
            with contextlib.suppress(LocalProtocolError, ConnectionError):
                await asyncio.wait_for(self._send_raw(self._conn.send(CloseConnection(code, reason))), 5)
        self.writer.close()
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


class WebSocketTransport:
    """A WebSocket as a byte pipe: binary messages in, binary messages out.
    SPDY tunnelled in WebSocket (``SPDY/3.1+portforward.k8s.io``) runs on it."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self._closing: asyncio.Future[None] | None = None

    async def read(self) -> bytes:
        while True:
            message = await self.ws.recv()
            if message is None:
                return b""
            if isinstance(message, bytes) and message:
                return message

    async def write(self, data: bytes) -> None:
        await self.ws.send(data)

    def close(self) -> None:
        if self._closing is None:
            self._closing = asyncio.ensure_future(self.ws.close())


async def _drain_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        await writer.drain()
