"""Clients of the CRI streaming server, as the real ones behave.

- SPDY: crid's own client (cri/streaming/spdy_client.py) opening its streams
  in client-go's order, as kubectl and crictl do;
- WebSocket v4/v5: the Python ``kubernetes`` package's ``WSClient``, a
  third-party implementation (sync: run it in a thread);
- SPDY tunnelled in WebSocket: websocket-client carrying SPDY frames in
  binary messages, as client-go's tunnel does.
"""

import asyncio
import socket
from dataclasses import dataclass, field

import websocket
from kubernetes.client import Configuration
from kubernetes.stream.ws_client import PortForward, WSClient, create_websocket

from cri.streaming import spdy_client
from cri.streaming.spdy_session import SpdySession, Stream


def ws_url(url: str) -> str:
    return "ws" + url.removeprefix("http")


@dataclass
class Result:
    stdout: bytes = b""
    stderr: bytes = b""
    error: bytes = b""  # what the error stream carried (a JSON Status from v4 on)
    protocol: str | None = None
    extra: dict[str, bytes] = field(default_factory=dict)


async def spdy_session(
    url: str,
    stdin: bytes | None = None,
    *,
    stdout: bool = True,
    stderr: bool = True,
    tty: bool = False,
    resize: list[bytes] | None = None,
    protocols: tuple[str, ...] = spdy_client.EXEC_PROTOCOLS,
) -> Result:
    """One exec or attach over SPDY: send ``stdin`` (then FIN) and the resize
    documents, read stdout/stderr/error to their ends."""
    conn = await spdy_client.connect(url, protocols=protocols)
    try:
        streams = await spdy_client.exec_streams(
            conn.session, stdin=stdin is not None, stdout=stdout, stderr=stderr, tty=tty
        )
        for doc in resize or []:
            await streams["resize"].write(doc)
        if stdin is not None:
            if stdin:
                await streams["stdin"].write(stdin)
            await streams["stdin"].close()
        got = await asyncio.gather(*(read_all(streams[k]) for k in ("stdout", "stderr", "error") if k in streams))
        named = dict(zip([k for k in ("stdout", "stderr", "error") if k in streams], got, strict=True))
        return Result(named.get("stdout", b""), named.get("stderr", b""), named.get("error", b""), conn.protocol)
    finally:
        await conn.close()


async def read_all(stream: Stream) -> bytes:
    return b"".join([chunk async for chunk in stream])


@dataclass
class K8sResult:
    stdout: str
    stderr: str
    returncode: int | None
    protocol: str


def k8s_exec(url: str, protocol: str, stdin: str | None = None, timeout: float = 30) -> K8sResult:
    """The kubernetes package's client, as ``kubernetes.stream.stream(...)`` uses it (run it in a thread)."""
    client = WSClient(Configuration(), ws_url(url), {"sec-websocket-protocol": protocol}, capture_all=True)
    if stdin is not None:
        client.write_stdin(stdin)
        if protocol.startswith("v5"):
            client.close_channel(0)  # v5's half-close: the command sees end of file
    client.run_forever(timeout=timeout)
    # returncode and read_stderr first: read_all() forgets the channels
    code, err = client.returncode, client.read_stderr()
    out = client.read_all()
    return K8sResult(out.replace(err, "", 1) if err else out, err, code, str(client.subprotocol))


def k8s_port_forward(url: str, port: int, payload: bytes, expect: int | None = None) -> tuple[bytes, str | None]:
    """Send ``payload`` through the kubernetes client's port-forward and read
    ``expect`` bytes back (or until the pod side closes); returns (data, error text)."""
    headers = {"sec-websocket-protocol": "v4.channel.k8s.io"}
    pf = PortForward(create_websocket(Configuration(), ws_url(url), headers), [port])
    sock = pf.socket(port)
    sock.settimeout(20)
    sock.sendall(payload)  # (this client drops the whole connection on a half-close: no shutdown)
    got = b""
    while expect is None or len(got) < expect:
        try:
            chunk = sock.recv(65536)
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    sock.close()
    return got, pf.error(port)


class TunnelTransport:
    """The client side of SPDY in WebSocket binary messages (client-go's tunnel),
    on websocket-client: the ``websockets`` package refuses the subprotocol's
    "/" as not an HTTP token, but Kubernetes sends it."""

    def __init__(self, conn: websocket.WebSocket) -> None:
        self.conn = conn

    async def read(self) -> bytes:
        try:
            _, data = await asyncio.to_thread(self.conn.recv_data)
        except (websocket.WebSocketException, OSError):
            return b""
        return bytes(data)

    async def write(self, data: bytes) -> None:
        await asyncio.to_thread(self.conn.send_bytes, data)

    def close(self) -> None:
        self.conn.shutdown()  # not close(): that waits for the server's answer on this (the loop's) thread


async def tunnel_session(url: str) -> SpdySession:
    """A client SPDY session tunnelled in WebSocket (``SPDY/3.1+portforward.k8s.io``)."""
    conn = await asyncio.to_thread(
        websocket.create_connection, ws_url(url), subprotocols=["SPDY/3.1+portforward.k8s.io"]
    )
    session = SpdySession(TunnelTransport(conn), client=True)
    session.start()
    return session


async def spdy_forward(session: SpdySession, port: int, request_id: int, payload: bytes) -> tuple[bytes, bytes]:
    """One forwarded connection: send ``payload`` (then half-close), read the
    answer and the error stream to their ends."""
    data, error = await spdy_client.port_forward_streams(session, port, request_id)
    await data.write(payload)
    await data.close()
    answer, message = await asyncio.gather(read_all(data), read_all(error))
    return answer, message


def closed_port() -> int:
    """A loopback port nobody listens on (just now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
