"""Kubernetes' port-forward protocol on SPDY or WebSocket.

SPDY (``portforward.k8s.io``, also tunnelled in WebSocket as
``SPDY/3.1+portforward.k8s.io``): per forwarded connection the client opens
a ``data`` and an ``error`` stream with the same ``requestid`` and a ``port``
header; each complete pair is one TCP connection into the pod, and a failure
is told as text on its error stream. WebSocket (``v4.channel.k8s.io``, one
connection per request): channel 2i carries the data of the request's i-th
port and 2i+1 its errors; the server starts each with the port as two
little-endian bytes.
"""

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from cri.errors import CridError
from cri.log import fields
from cri.streaming.channels import ChannelConn, ChannelSink, ChannelSource
from cri.streaming.spdy_session import SessionClosed, SpdySession, Stream

log = logging.getLogger(__name__)

SPDY_PROTOCOLS = ("portforward.k8s.io",)
WEBSOCKET_PROTOCOLS = ("v4.channel.k8s.io", "v4.base64.channel.k8s.io", "")
TUNNEL_PROTOCOL = "SPDY/3.1+portforward.k8s.io"

# forward(port, duplex): raises CridError with a readable reason when the pod side cannot be reached
Forward = Callable[[int, "Duplex"], Awaitable[None]]


class Duplex:
    """A source and a sink as one forwarded connection."""

    def __init__(self, source: Stream | ChannelSource, sink: Stream | ChannelSink) -> None:
        self._source, self._sink = source, sink

    async def read(self) -> bytes:
        return await self._source.read()

    async def write(self, data: bytes) -> None:
        await self._sink.write(data)

    async def close(self) -> None:
        await self._sink.close()


def parse_port(text: str | None) -> int:
    if not text or not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"invalid port {text!r}: must be 1-65535")
    return int(text)


async def _run_one(port: int, duplex: Duplex, error: Stream | ChannelSink, forward: Forward, who: str) -> None:
    try:
        await forward(port, duplex)
    except (CridError, OSError) as exc:
        message = f"error forwarding port {port} to pod {who}: {exc}"
        log.info("port-forward failed", extra=fields(port=port, pod=who, error=str(exc)))
        with contextlib.suppress(ConnectionError):
            await error.write(message.encode())
    finally:
        for end in (duplex, error):
            with contextlib.suppress(ConnectionError):
                await end.close()


@dataclass
class _Pair:
    data: Stream | None = None
    error: Stream | None = None
    timer: asyncio.TimerHandle | None = None
    started: bool = field(default=False)


async def serve_spdy(
    session: SpdySession, forward: Forward, who: str, pair_seconds: float, allowed: set[int] | None = None
) -> None:
    """Serve every stream pair the client opens until the session ends."""
    pairs: dict[str, _Pair] = {}
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()

    def expire(request_id: str) -> None:
        pair = pairs.pop(request_id, None)
        if pair is not None and pair.error is not None and not pair.started:
            msg = f"timed out after {pair_seconds:g}s waiting for the data and error streams of request {request_id}"
            tasks.add(t := asyncio.ensure_future(_say(pair.error, msg)))
            t.add_done_callback(tasks.discard)

    try:
        while True:
            try:
                stream = await session.accept_stream()
            except SessionClosed:
                break
            kind = (stream.header("streamtype") or "").lower()
            try:
                port = parse_port(stream.header("port"))
                if kind not in ("data", "error"):
                    raise ValueError(f"invalid stream type {kind!r}")
                if allowed and port not in allowed:
                    raise ValueError(f"port {port} was not requested (requested: {sorted(allowed)})")
            except ValueError as exc:
                log.info("port-forward stream refused", extra=fields(pod=who, error=str(exc)))
                if kind == "error":
                    await _say(stream, str(exc))
                else:
                    stream.reset()
                continue
            # old clients send no requestid: kubelet pairs error stream n with data stream n+2
            request_id = stream.header("requestid") or str(stream.id if kind == "error" else stream.id - 2)
            pair = pairs.get(request_id)
            if pair is None:
                pair = pairs[request_id] = _Pair()
                pair.timer = loop.call_later(pair_seconds, expire, request_id)
            if getattr(pair, kind) is not None:
                await _say(pair.error or stream, f"{kind} stream of request {request_id} already assigned")
                continue
            setattr(pair, kind, stream)
            if pair.data is not None and pair.error is not None:
                pair.started = True
                if pair.timer is not None:
                    pair.timer.cancel()
                del pairs[request_id]
                task = asyncio.ensure_future(_run_one(port, Duplex(pair.data, pair.data), pair.error, forward, who))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
    finally:
        for pair in pairs.values():
            if pair.timer is not None:
                pair.timer.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def _say(stream: Stream | ChannelSink, message: str) -> None:
    with contextlib.suppress(ConnectionError):
        await stream.write(message.encode())
        await stream.close()


def websocket_readable(ports: list[int]) -> set[int]:
    return {2 * i for i in range(len(ports))}


async def serve_websocket(conn: ChannelConn, ports: list[int], forward: Forward, who: str) -> None:
    """One connection per port of the request, all at once."""

    async def one(i: int, port: int) -> None:
        data, error = conn.sink(2 * i), conn.sink(2 * i + 1)
        prefix = struct.pack("<H", port)
        with contextlib.suppress(ConnectionError):
            await conn.write(2 * i, prefix)
            await conn.write(2 * i + 1, prefix)
        await _run_one(port, Duplex(conn.source(2 * i), data), error, forward, who)

    await asyncio.gather(*(one(i, p) for i, p in enumerate(ports)), return_exceptions=True)
