"""The streaming server's sessions: a connection's HTTP request, its upgrade to
SPDY/3.1 or WebSocket, and the exec, attach or port-forward it carries.

Loaded by ``StreamingServer`` at its first connection.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.config import StreamingConfig
from cri.errors import CridError
from cri.log import fields
from cri.runtime.stdio import Duplex, Sink, Source, Stdio
from cri.server import streaming_http as http
from cri.server.stream_tokens import TokenCache
from cri.server.streaming import Backend
from cri.server.streaming_metrics import BYTES, KINDS, SESSIONS, SESSIONS_TOTAL
from cri.streaming import portforward, remotecommand
from cri.streaming.channels import CHANNEL_PROTOCOLS, ChannelConn, choose
from cri.streaming.spdy_client import StreamTransport
from cri.streaming.spdy_session import SpdySession
from cri.streaming.websocket import HandshakeRefused, WebSocket, WebSocketTransport

log = logging.getLogger("cri.server.streaming")


class _Activity:
    """Counts bytes for the metrics and remembers when the session last moved."""

    def __init__(self, kind: str) -> None:
        self.last = time.monotonic()
        self._in = BYTES.labels(kind, "in")
        self._out = BYTES.labels(kind, "out")

    def source(self, s: Source | None) -> Source | None:
        return None if s is None else _Counted(s, self)

    def sink(self, s: Sink | None) -> Sink | None:
        return None if s is None else _Counted(s, self)

    def got(self, n: int) -> None:
        self.last = time.monotonic()
        self._in.inc(n)

    def sent(self, n: int) -> None:
        self.last = time.monotonic()
        self._out.inc(n)


class _Counted:
    """A Source, Sink or Duplex that counts and ticks the session's activity."""

    def __init__(self, inner: Source | Sink | Duplex, activity: _Activity) -> None:
        self.inner, self.activity = inner, activity

    async def read(self) -> bytes:
        assert hasattr(self.inner, "read")
        data: bytes = await self.inner.read()
        self.activity.got(len(data))
        return data

    async def write(self, data: bytes) -> None:
        assert hasattr(self.inner, "write")
        await self.inner.write(data)
        self.activity.sent(len(data))

    async def close(self) -> None:
        assert hasattr(self.inner, "close")
        await self.inner.close()


class Sessions:
    """What a connection runs, for a server's config, domain and tokens."""

    def __init__(self, config: StreamingConfig, backend: Backend, tokens: TokenCache, stopping: asyncio.Event) -> None:
        self.config = config
        self.backend = backend
        self.tokens = tokens
        self._stopping = stopping

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection: its request, then its session if the request is a valid upgrade."""
        try:
            await self._serve(reader, writer)
        except http.BadRequest as exc:
            log.debug("streaming: bad request", extra=fields(error=str(exc)))
            with contextlib.suppress(ConnectionError):
                writer.write(http.response(400, "Bad Request", str(exc)))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await http.read_head(reader)
        parts = head.path.strip("/").split("/")
        if len(parts) != 2 or parts[0] not in KINDS:
            writer.write(http.response(404, "Not Found", "404 page not found"))
            return
        if head.method not in ("GET", "POST"):
            writer.write(http.response(405, "Method Not Allowed", f"{head.method} is not allowed"))
            return
        kind, token = parts
        request = self.tokens.consume(kind, token)
        if request is None:
            writer.write(http.response(404, "Not Found", "404 page not found: unknown or expired token"))
            return
        upgrade = head.upgrade()
        transport = "websocket" if upgrade == "websocket" else "spdy" if upgrade == "spdy/3.1" else ""
        if not transport:
            writer.write(http.response(400, "Bad Request", "unable to upgrade: missing upgrade headers in request"))
            return
        SESSIONS.labels(kind).inc()
        outcome = "error"
        activity = _Activity(kind)
        started = time.monotonic()
        try:
            serve = self._websocket if transport == "websocket" else self._spdy
            outcome = await self._watched(serve(kind, request, head, reader, writer, activity), activity)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            SESSIONS.labels(kind).dec()
            SESSIONS_TOTAL.labels(kind, transport, outcome).inc()
            log.debug(
                "streaming session ended",
                extra=fields(kind=kind, transport=transport, outcome=outcome,
                             seconds=round(time.monotonic() - started, 3)),
            )  # fmt: skip

    async def _watched(self, session: Awaitable[str], activity: _Activity) -> str:
        """Run a session; end it when it has been idle for the configured time."""
        task = asyncio.ensure_future(session)
        idle = self.config.idle_timeout_seconds
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=min(idle / 4, 30.0))
                if done:
                    return task.result()
                if time.monotonic() - activity.last > idle:
                    task.cancel()
                    await asyncio.wait({task})
                    return "idle"
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    # --- SPDY ---------------------------------------------------------------------------------

    async def _spdy(
        self, kind: str, request: Any, head: http.Head, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, activity: _Activity,
    ) -> str:  # fmt: skip
        supported = portforward.SPDY_PROTOCOLS if kind == "portforward" else remotecommand.SPDY_PROTOCOLS
        offered = head.values(http.PROTOCOL_HEADER)
        protocol = http.negotiate(offered, supported)
        if protocol is None:
            writer.write(http.spdy_refusal(offered, supported))
            return "refused"
        writer.write(http.spdy_switch(protocol))
        await writer.drain()
        session = SpdySession(StreamTransport(reader, writer, head.rest))
        return await self._run_spdy(kind, request, protocol, session, activity)

    async def _run_spdy(self, kind: str, request: Any, protocol: str, session: SpdySession, activity: _Activity) -> str:
        session.start()
        try:
            if kind == "portforward":
                await portforward.serve_spdy(
                    session,
                    self._forwarder(request, activity),
                    request.pod_sandbox_id,
                    self.config.stream_creation_timeout_seconds,
                    set(request.port),
                )
                return "ok"
            opts = _options(request)
            try:
                streams = await remotecommand.collect_spdy_streams(
                    session, opts, protocol, self.config.stream_creation_timeout_seconds
                )
            except remotecommand.StreamSetupError as exc:
                log.info("streaming: stream setup failed", extra=fields(kind=kind, error=str(exc)))
                return "setup_failed"
            stdio = self._counted(streams.stdio, activity)
            status = await self._run_command(kind, request, stdio, session.wait_closed)
            await _close_sinks(stdio)
            await remotecommand.finish(streams.error, status, protocol)
            return "ok" if status["status"] == "Success" else "failed"
        finally:
            await session.close()

    # --- WebSocket --------------------------------------------------------------------------------

    async def _websocket(
        self, kind: str, request: Any, head: http.Head, reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter, activity: _Activity,
    ) -> str:  # fmt: skip
        supported: tuple[str, ...] = remotecommand.WEBSOCKET_PROTOCOLS
        if kind == "portforward":
            supported = (portforward.TUNNEL_PROTOCOL, *portforward.WEBSOCKET_PROTOCOLS)
        try:
            ws = await WebSocket.accept(reader, writer, head.raw + head.rest, lambda o: choose(o, supported))
        except HandshakeRefused as exc:
            log.info("streaming: WebSocket upgrade refused", extra=fields(kind=kind, error=str(exc)))
            return "refused"
        try:
            if ws.subprotocol == portforward.TUNNEL_PROTOCOL:
                session = SpdySession(WebSocketTransport(ws))
                return await self._run_spdy(kind, request, portforward.SPDY_PROTOCOLS[0], session, activity)
            protocol = CHANNEL_PROTOCOLS[ws.subprotocol or ""]
            if kind == "portforward":
                ports = list(request.port) or _query_ports(head)
                conn = ChannelConn(ws, protocol, portforward.websocket_readable(ports))
                reading = asyncio.ensure_future(conn.run())
                try:
                    forward = self._forwarder(request, activity)
                    await portforward.serve_websocket(conn, ports, forward, request.pod_sandbox_id)
                finally:
                    reading.cancel()
                return "ok"
            opts = _options(request)
            conn = ChannelConn(ws, protocol, remotecommand.websocket_readable(opts))
            reading = asyncio.ensure_future(conn.run())
            try:
                await remotecommand.announce(conn, opts)
                stdio = self._counted(remotecommand.websocket_stdio(conn, opts), activity)
                status = await self._run_command(kind, request, stdio, conn.done.wait)
                await _close_sinks(stdio)
                await remotecommand.finish(conn.sink(remotecommand.ERROR), status, protocol)
            finally:
                reading.cancel()
            return "ok" if status["status"] == "Success" else "failed"
        finally:
            await ws.close()

    # --- the domain calls -----------------------------------------------------------------------

    def _counted(self, stdio: Stdio, activity: _Activity) -> Stdio:
        return Stdio(
            stdin=activity.source(stdio.stdin),
            stdout=activity.sink(stdio.stdout),
            stderr=activity.sink(stdio.stderr),
            tty=stdio.tty,
            resize=stdio.resize,
        )

    def _forwarder(self, request: pb.PortForwardRequest, activity: _Activity) -> portforward.Forward:
        async def forward(port: int, stream: Duplex) -> None:
            await self.backend.port_forward(request, port, _Counted(stream, activity))

        return forward

    async def _run_command(
        self, kind: str, request: Any, stdio: Stdio, lost: Callable[[], Awaitable[Any]]
    ) -> dict[str, Any]:
        """Run exec or attach; a client that goes away cancels it."""
        if kind == "exec":
            call: Awaitable[int | None] = self.backend.exec(request, stdio)
        else:
            call = self.backend.attach(request, stdio)
        work = asyncio.ensure_future(call)
        gone = asyncio.ensure_future(lost())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({work, gone, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done() and not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return remotecommand.internal_error("crid is shutting down: the session was closed")
            if not work.done():
                # the connection ended: give output already on its way a moment, then stop the command
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(work), 1.0)
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                return remotecommand.internal_error("the client went away")
            code = work.result()
        except (CridError, OSError) as exc:
            what = "executing command in container" if kind == "exec" else "attaching to container"
            return remotecommand.internal_error(f"error {what}: {exc}")
        finally:
            gone.cancel()
            stopping.cancel()
            if not work.done():
                work.cancel()
        if kind == "exec" and code:
            return remotecommand.exit_status(int(code), list(request.cmd))
        return remotecommand.success()


def _options(request: pb.ExecRequest | pb.AttachRequest) -> remotecommand.Options:
    return remotecommand.Options(
        stdin=request.stdin, stdout=request.stdout, stderr=request.stderr and not request.tty, tty=request.tty
    )


def _query_ports(head: http.Head) -> list[int]:
    ports = []
    for value in head.query.get("port", []):
        for text in value.split(","):
            with contextlib.suppress(ValueError):
                ports.append(portforward.parse_port(text))
    return ports


async def _close_sinks(stdio: Stdio) -> None:
    for sink in (stdio.stdout, stdio.stderr):
        if sink is not None:
            with contextlib.suppress(ConnectionError):
                await sink.close()
