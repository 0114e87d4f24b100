"""The CRI streaming server: exec, attach and port-forward sessions.

Exec, Attach and PortForward answer with a URL on this server and a
single-use token; the client (kubelet proxying ``kubectl``, crictl, critest)
connects there and upgrades to SPDY/3.1 or to WebSocket. Both transports
carry every protocol version Kubernetes has: SPDY with remotecommand v1-v5
and portforward.k8s.io; WebSocket with v5/v4/v1 channels (binary and
base64), v4 port-forward channels, and SPDY tunnelled in WebSocket for
port-forward. Each session is a task; the domain (a ``Backend``) sees only
``Stdio``/``Duplex`` streams. A session ends when the command or connection
ends, when it has been idle for the configured time, or at shutdown; a
vanished client cancels the domain call, which then kills what it started.
The protocols' code is in ``streaming_sessions``, loaded at the first
connection.
"""

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING, Any, Protocol

from cri.api.v1 import api_pb2 as pb
from cri.config import StreamingConfig, parse_address
from cri.runtime.stdio import Duplex, Stdio
from cri.server import streaming_metrics  # noqa: F401  (its metrics are shown, at zero, from the start)
from cri.server.stream_tokens import TokenCache

if TYPE_CHECKING:
    from cri.server.streaming_sessions import Sessions


class Backend(Protocol):
    """What the sessions call in the domain."""

    async def exec(self, request: pb.ExecRequest, stdio: Stdio) -> int: ...
    async def attach(self, request: pb.AttachRequest, stdio: Stdio) -> None: ...
    async def port_forward(self, request: pb.PortForwardRequest, port: int, stream: Duplex) -> None: ...


class StreamingServer:
    def __init__(self, config: StreamingConfig, backend: Backend, tokens: TokenCache | None = None) -> None:
        self.config = config
        self.backend = backend
        self.tokens = tokens if tokens is not None else TokenCache()
        self.base_url = ""
        self._server: asyncio.Server | None = None
        self._sessions: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._impl: Sessions | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | None:
        cfg = self.config
        if not cfg.tls_cert_file:
            return None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cfg.tls_cert_file, cfg.tls_key_file)
        if cfg.tls_client_ca_file:
            ctx.load_verify_locations(cfg.tls_client_ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    async def start(self) -> str:
        """Listen; returns the base URL (the real port when port 0 was asked for)."""
        host, port = parse_address(self.config.address)
        tls = self._ssl()
        self._server = await asyncio.start_server(self._connection, host.strip("[]"), port, ssl=tls)
        sock = self._server.sockets[0].getsockname()
        shown = f"[{sock[0]}]" if ":" in sock[0] else sock[0]
        self.base_url = f"{'https' if tls else 'http'}://{shown}:{sock[1]}"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and end every session (their streams are closed, the
        domain calls cancelled: exec'd commands are killed, containers are not)."""
        if self._server is not None:
            self._server.close()
        self._stopping.set()  # exec/attach sessions end their command and close their streams
        if self._sessions:
            await asyncio.wait(self._sessions, timeout=5)
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(self._sessions, timeout=10)
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def url(self, kind: str, request: Any) -> str:
        """A fresh single-use URL for ``request`` (RESOURCE_EXHAUSTED past the pending limit)."""
        return f"{self.base_url}/{kind}/{self.tokens.insert(kind, request)}"

    # --- connections ------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._sessions.add(task)
        try:
            await self._handler().serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): the top of a connection's own task, nobody awaits it
        finally:
            self._sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 5)

    def _handler(self) -> "Sessions":
        # HTTP, WebSocket and SPDY (h11, wsproto and crid's own modules) are imported at the first
        # connection: a node that never streams does not keep them in the daemon (1.4 MiB of RSS)
        if self._impl is None:
            from cri.server.streaming_sessions import Sessions

            self._impl = Sessions(self.config, self.backend, self.tokens, self._stopping)
        return self._impl
