"""A SPDY/3.1 client that behaves like kubectl and crictl (client-go's remotecommand and portforward).

For tests and tools: `connect` upgrades an HTTP/1.1 request to SPDY/3.1 and
returns a client-side `SpdySession` (odd stream ids) over a `StreamTransport`;
`exec_streams` and `port_forward_streams` open streams with the headers, and
in the order, client-go uses.
"""

import asyncio
import ssl
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cri.streaming.spdy_session import SpdySession, Stream

UPGRADE_PROTOCOL = "SPDY/3.1"
# what kubectl 1.32 offers over SPDY (kubelet answers v4: v5 is WebSocket-only there)
EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
PORT_FORWARD_PROTOCOL = "portforward.k8s.io"
_MAX_ERROR_BODY = 64 * 1024


class StreamTransport:
    """A `Transport` over an asyncio stream pair; ``first`` are bytes of the
    connection already read (after an HTTP head), handed out before the rest."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, first: bytes = b"", read_size: int = 64 * 1024
    ) -> None:
        self._reader, self._writer, self._read_size = reader, writer, read_size
        self._first = first

    async def read(self) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        try:
            return await self._reader.read(self._read_size)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)  # buffered whole before the first await: cancel-safe
        await self._writer.drain()

    def close(self) -> None:
        self._writer.close()


class UpgradeFailed(Exception):
    def __init__(self, status: int, reason: str, body: bytes) -> None:
        super().__init__(f"upgrade refused: {status} {reason}: {body[:200]!r}")
        self.status, self.reason, self.body = status, reason, body


@dataclass
class ClientConnection:
    session: SpdySession
    protocol: str | None  # the X-Stream-Protocol-Version the server chose
    headers: dict[str, str]  # of the 101 response, names lower-cased

    async def close(self) -> None:
        await self.session.close()


async def connect(
    url: str,
    *,
    protocols: Sequence[str] = EXEC_PROTOCOLS,
    method: str = "POST",
    headers: Mapping[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    **session_options: Any,
) -> ClientConnection:
    """Upgrade ``method url`` to SPDY/3.1 offering ``protocols``; `UpgradeFailed` unless the answer is 101."""
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme in ("https", "wss")
    host = parts.hostname or "localhost"
    port = parts.port or (443 if secure else 80)
    reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context if secure else None)
    try:
        lines = [
            f"{method} {parts.path or '/'}{'?' + parts.query if parts.query else ''} HTTP/1.1",
            f"Host: {parts.netloc}",
            "Connection: Upgrade",
            f"Upgrade: {UPGRADE_PROTOCOL}",
            *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
            *(f"{k}: {v}" for k, v in (headers or {}).items()),
            "Content-Length: 0",
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await writer.drain()
        status, reason, response = await _read_response_head(reader)
        if status != 101:
            length = int(response.get("content-length", "0") or 0)
            body = await reader.read(min(length, _MAX_ERROR_BODY)) if length else b""
            raise UpgradeFailed(status, reason, body)
    except BaseException:
        writer.close()
        raise
    # bytes after the head stay in ``reader``: the session reads them first
    session = SpdySession(StreamTransport(reader, writer), client=True, **session_options)
    session.start()
    return ClientConnection(session, response.get("x-stream-protocol-version"), response)


async def _read_response_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as e:
        raise UpgradeFailed(0, "response head too long", b"") from e
    except asyncio.IncompleteReadError as e:
        raise UpgradeFailed(0, "connection closed before the response", e.partial) from e
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise UpgradeFailed(0, "not an HTTP/1.x response", head[:200])
    response: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            response[name.strip().lower()] = value.strip()
    return int(code), reason, response


async def exec_streams(
    session: SpdySession, *, stdin: bool = False, stdout: bool = True, stderr: bool = True, tty: bool = False
) -> dict[str, Stream]:
    """Open the streams of an exec/attach the way client-go's v3/v4 protocol does: error first, resize if a tty.

    With a tty stderr is not opened (the tty merges it into stdout).
    """
    kinds = ["error"]
    kinds += ["stdin"] if stdin else []
    kinds += ["stdout"] if stdout else []
    kinds += ["stderr"] if stderr and not tty else []
    kinds += ["resize"] if tty else []
    streams = {}
    for kind in kinds:
        streams[kind] = await session.open_stream({"streamtype": kind})
    return streams


async def port_forward_streams(session: SpdySession, port: int, request_id: int) -> tuple[Stream, Stream]:
    """The (data, error) pair client-go opens for one forwarded connection; the error stream is half-closed."""
    common = {"port": str(port), "requestid": str(request_id)}
    error = await session.open_stream({"streamtype": "error", **common})
    await error.close()
    data = await session.open_stream({"streamtype": "data", **common})
    return data, error
