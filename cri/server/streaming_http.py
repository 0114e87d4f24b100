"""The HTTP/1.1 side of the streaming server: the request head, plain
answers, and the SPDY upgrade handshake (Kubernetes' httpstream rules).

A request head is parsed by h11 (bounded in size and time); everything after
it belongs to the upgraded protocol. SPDY negotiation follows kubelet: the
client lists ``X-Stream-Protocol-Version`` headers in its order of
preference, the first one the server knows wins, none offered means the
oldest protocol, and none in common is 403 with the server's list.
"""

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import h11

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT = 30.0
PROTOCOL_HEADER = "x-stream-protocol-version"
ACCEPTED_HEADER = "X-Accepted-Stream-Protocol-Versions"


class BadRequest(Exception):
    """Not an HTTP request this server can answer (the connection is closed)."""


@dataclass
class Head:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: list[tuple[str, str]]  # lower-case names, in order
    raw: bytes  # the bytes of the head as read (wsproto parses them again)
    rest: bytes  # bytes that came after the head

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k == name), "")

    def values(self, name: str) -> list[str]:
        """Every value of a repeated (or comma-separated) header."""
        out: list[str] = []
        for k, v in self.headers:
            if k == name:
                out.extend(p.strip() for p in v.split(",") if p.strip())
        return out

    def upgrade(self) -> str:
        """ "websocket", "spdy/3.1", or "" when the request asks for no upgrade."""
        if "upgrade" not in (t.strip().lower() for t in self.header("connection").split(",")):
            return ""
        return self.header("upgrade").strip().lower()


async def read_head(reader: asyncio.StreamReader) -> Head:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    raw = bytearray()

    async def parse() -> h11.Request:
        while True:
            event = conn.next_event()
            if isinstance(event, h11.Request):
                return event
            if event is h11.NEED_DATA:
                data = await reader.read(8192)
                if not data:
                    raise BadRequest("the connection closed before a complete request")
                raw.extend(data)
                conn.receive_data(data)
            else:
                raise BadRequest(f"unexpected {type(event).__name__}")

    try:
        request = await asyncio.wait_for(parse(), HEAD_TIMEOUT)
    except h11.RemoteProtocolError as exc:
        raise BadRequest(f"malformed request: {exc}") from None
    except TimeoutError:
        raise BadRequest(f"no complete request within {HEAD_TIMEOUT:g}s") from None
    rest = bytes(conn.trailing_data[0])
    head_len = len(raw) - len(rest)
    url = urlsplit(request.target.decode("ascii", "replace"))
    return Head(
        method=request.method.decode("ascii", "replace").upper(),
        path=url.path,
        query=parse_qs(url.query),
        headers=[(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in request.headers],
        raw=bytes(raw[:head_len]),
        rest=rest,
    )


def response(status: int, reason: str, body: str = "", headers: list[tuple[str, str]] | None = None) -> bytes:
    """A complete plain answer; the connection is closed after it."""
    data = body.encode()
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Type: text/plain; charset=utf-8"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    lines += [f"Content-Length: {len(data)}", "Connection: close", "", ""]
    return "\r\n".join(lines).encode() + data


def negotiate(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The client's most preferred protocol that the server knows; "" when the
    client offered none; None when there is nothing in common."""
    if not offered:
        return ""
    return next((p for p in offered if p in supported), None)


def spdy_refusal(offered: list[str], supported: tuple[str, ...]) -> bytes:
    body = f"unable to upgrade: unable to negotiate protocol: client supports {offered}, server {list(supported)}"
    return response(403, "Forbidden", body, [(ACCEPTED_HEADER, p) for p in supported])


def spdy_switch(protocol: str) -> bytes:
    lines = ["HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: SPDY/3.1"]
    if protocol:
        lines.append(f"X-Stream-Protocol-Version: {protocol}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
