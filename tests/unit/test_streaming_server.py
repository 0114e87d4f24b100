"""The streaming server in process, with a fake domain behind it, driven by
real clients: the Python ``kubernetes`` package's WebSocket client (v4 and
v5), the ``websockets`` package (v5 half-close, base64, SPDY tunnelled in
WebSocket), and crid's SPDY client (as kubectl/crictl open their streams)."""

import asyncio
import json
import struct
from collections.abc import AsyncIterator

import pytest
import websockets
from websockets.typing import Subprotocol

from cri.api.v1 import api_pb2 as pb
from cri.config import StreamingConfig
from cri.errors import FailedPrecondition
from cri.runtime.stdio import Duplex, Stdio
from cri.server.stream_tokens import TokenCache
from cri.server.streaming import StreamingServer
from cri.streaming import spdy_client
from tests.support import stream_clients as sc


class FakeBackend:
    """Commands that exercise each stream: echo, cat, exit N, err, sizes N, sleep, flood N."""

    def __init__(self) -> None:
        self.cancelled = asyncio.Event()
        self.forwarded: list[int] = []

    async def exec(self, request: pb.ExecRequest, stdio: Stdio) -> int:
        cmd = list(request.cmd)
        out, err = stdio.stdout, stdio.stderr
        if cmd[0] == "echo" and out:
            await out.write((" ".join(cmd[1:]) + "\n").encode())
        elif cmd[0] == "cat" and out and stdio.stdin:
            while data := await stdio.stdin.read():
                await out.write(data)
        elif cmd[0] == "exit":
            return int(cmd[1])
        elif cmd[0] == "err" and out and err:
            await out.write(b"to stdout\n")
            await err.write(b"to stderr\n")
        elif cmd[0] == "sizes" and out and stdio.resize:
            n = int(cmd[1])
            async for size in stdio.resize:
                await out.write(f"{size.width}x{size.height}\n".encode())
                n -= 1
                if not n:
                    break
        elif cmd[0] == "sleep":
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        elif cmd[0] == "flood" and out:
            chunk = b"x" * 65536
            for _ in range(int(cmd[1]) * 16):
                await out.write(chunk)
        return 0

    async def attach(self, request: pb.AttachRequest, stdio: Stdio) -> None:
        if stdio.stdout:
            await stdio.stdout.write(b"attached\n")

    async def port_forward(self, request: pb.PortForwardRequest, port: int, stream: Duplex) -> None:
        self.forwarded.append(port)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            raise FailedPrecondition(f"failed to connect to localhost:{port}: {exc}") from None

        async def up() -> None:
            while data := await stream.read():
                writer.write(data)
                await writer.drain()
            writer.write_eof()

        task = asyncio.ensure_future(up())
        while data := await reader.read(65536):
            await stream.write(data)
        await stream.close()
        await task
        writer.close()


@pytest.fixture
async def server() -> AsyncIterator[tuple[StreamingServer, FakeBackend]]:
    backend = FakeBackend()
    srv = StreamingServer(StreamingConfig(address="127.0.0.1:0"), backend, TokenCache())
    await srv.start()
    yield srv, backend
    await srv.stop()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    yield srv.sockets[0].getsockname()[1]
    srv.close()


def exec_url(srv: StreamingServer, cmd: list[str], **flags: bool) -> str:
    req = pb.ExecRequest(container_id="c", cmd=cmd, stdout=True, **flags)
    return srv.url("exec", req)


# --- SPDY -----------------------------------------------------------------------------------


async def test_spdy_exec_stdout_stderr_stdin_and_exit_codes(server: tuple[StreamingServer, FakeBackend]) -> None:
    srv, _ = server
    got = await sc.spdy_session(exec_url(srv, ["err"], stderr=True))
    assert got.protocol == "v5.channel.k8s.io"
    assert got.stdout == b"to stdout\n" and got.stderr == b"to stderr\n"
    assert json.loads(got.error) == {"metadata": {}, "status": "Success"}
    got = await sc.spdy_session(exec_url(srv, ["cat"], stdin=True), stdin=b"hello\n", stderr=False)
    assert got.stdout == b"hello\n"
    got = await sc.spdy_session(exec_url(srv, ["exit", "3"]), stderr=False)
    status = json.loads(got.error)
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]


async def test_spdy_old_protocol_and_refusal(server: tuple[StreamingServer, FakeBackend]) -> None:
    srv, _ = server
    got = await sc.spdy_session(exec_url(srv, ["exit", "2"]), stderr=False, protocols=("v3.channel.k8s.io",))
    assert got.protocol == "v3.channel.k8s.io"
    assert got.error.startswith(b"command terminated with non-zero exit code")  # v1-v3: text
    with pytest.raises(spdy_client.UpgradeFailed) as refused:
        await spdy_client.connect(exec_url(srv, ["echo"]), protocols=["v9.channel.k8s.io"])
    assert refused.value.status == 403


async def test_spdy_tty_resize(server: tuple[StreamingServer, FakeBackend]) -> None:
    srv, _ = server
    resize = [b'{"Width":80,"Height":24}\n{"Width":100,', b'"Height":50}']
    got = await sc.spdy_session(exec_url(srv, ["sizes", "2"], tty=True), tty=True, resize=resize)
    assert got.stdout == b"80x24\n100x50\n" and got.stderr == b""


async def test_token_is_single_use_and_unknown_is_404(server: tuple[StreamingServer, FakeBackend]) -> None:
    srv, _ = server
    url = exec_url(srv, ["echo", "once"])
    await sc.spdy_session(url, stderr=False)
    for bad in (url, f"{srv.base_url}/exec/nosuchtoken", f"{srv.base_url}/attach/{url.rsplit('/', 1)[1]}"):
        with pytest.raises(spdy_client.UpgradeFailed) as err:
            await spdy_client.connect(bad)
        assert err.value.status == 404


async def test_expired_token_is_404() -> None:
    srv = StreamingServer(StreamingConfig(address="127.0.0.1:0"), FakeBackend(), TokenCache(ttl=0.2))
    await srv.start()
    try:
        url = exec_url(srv, ["echo"])
        await asyncio.sleep(0.3)
        with pytest.raises(spdy_client.UpgradeFailed) as err:
            await spdy_client.connect(url)
        assert err.value.status == 404
    finally:
        await srv.stop()


async def test_client_that_vanishes_cancels_the_command(server: tuple[StreamingServer, FakeBackend]) -> None:
    srv, backend = server
    conn = await spdy_client.connect(exec_url(srv, ["sleep"]))
    await spdy_client.exec_streams(conn.session, stderr=False)
    await asyncio.sleep(0.1)
    conn.session._transport.close()  # the connection drops, no GOAWAY
    await asyncio.wait_for(backend.cancelled.wait(), 10)


# --- WebSocket ----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["v4.channel.k8s.io", "v5.channel.k8s.io"])
async def test_kubernetes_client_exec(server: tuple[StreamingServer, FakeBackend], protocol: str) -> None:
    srv, _ = server
    got = await asyncio.to_thread(sc.k8s_exec, exec_url(srv, ["err"], stderr=True), protocol)
    assert got.protocol == protocol
    assert got.stdout == "to stdout\n" and got.stderr == "to stderr\n" and got.returncode == 0
    got = await asyncio.to_thread(sc.k8s_exec, exec_url(srv, ["exit", "1"]), protocol)
    assert got.returncode == 1
    if protocol.startswith("v5"):  # v5's half-close ends stdin
        got = await asyncio.to_thread(sc.k8s_exec, exec_url(srv, ["cat"], stdin=True), protocol, "abc")
        assert got.stdout == "abc" and got.returncode == 0


async def test_websocket_v5_close_signal_and_base64(server: tuple[StreamingServer, FakeBackend]) -> None:
    srv, _ = server
    url = sc.ws_url(exec_url(srv, ["cat"], stdin=True))
    async with websockets.connect(url, subprotocols=[Subprotocol("v5.channel.k8s.io")]) as c:
        assert c.subprotocol == "v5.channel.k8s.io"
        assert await c.recv() == b"\x01"  # the empty announce on stdout
        await c.send(b"\x00ping")
        await c.send(bytes([255, 0]))
        got = [m async for m in c]
    assert got[0] == b"\x01ping"
    # no close signal back: client-go's v5 reader does not know it (it logs "Unknown stream" for 255)
    assert got[-1] == b'\x03{"metadata":{},"status":"Success"}' and not any(m[0] == 255 for m in got)
    async with websockets.connect(
        sc.ws_url(exec_url(srv, ["echo", "b64"])), subprotocols=[Subprotocol("v4.base64.channel.k8s.io")]
    ) as c:
        got = [m async for m in c]
    assert "1YjY0Cg==" in got  # "b64\n" on stdout, base64 with its channel digit
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(sc.ws_url(exec_url(srv, ["echo"])), subprotocols=[Subprotocol("nope.k8s.io")])
    assert refused.value.response.status_code == 400


# --- port-forward -------------------------------------------------------------------------------


async def test_spdy_port_forward(server: tuple[StreamingServer, FakeBackend], echo_port: int) -> None:
    srv, _ = server
    url = srv.url("portforward", pb.PortForwardRequest(pod_sandbox_id="p"))
    conn = await spdy_client.connect(url, protocols=[spdy_client.PORT_FORWARD_PROTOCOL])
    payload = bytes(range(256)) * 4096
    for request_id in (0, 1):
        assert await sc.spdy_forward(conn.session, echo_port, request_id, payload) == (payload, b"")
    closed = sc.closed_port()
    _, message = await sc.spdy_forward(conn.session, closed, 7, b"")
    assert message.startswith(f"error forwarding port {closed} to pod p: failed to connect".encode())
    await conn.close()


async def test_spdy_port_forward_tunnelled_in_websocket(
    server: tuple[StreamingServer, FakeBackend], echo_port: int
) -> None:
    srv, _ = server
    session = await sc.tunnel_session(srv.url("portforward", pb.PortForwardRequest(pod_sandbox_id="p")))
    assert await sc.spdy_forward(session, echo_port, 0, b"through the tunnel") == (b"through the tunnel", b"")
    await session.close()


async def test_kubernetes_client_port_forward(server: tuple[StreamingServer, FakeBackend], echo_port: int) -> None:
    srv, _ = server
    url = srv.url("portforward", pb.PortForwardRequest(pod_sandbox_id="p", port=[echo_port]))
    data, error = await asyncio.to_thread(sc.k8s_port_forward, url, echo_port, b"v4 forward", 10)
    assert data == b"v4 forward" and not error


async def test_websocket_port_forward_prefix(server: tuple[StreamingServer, FakeBackend], echo_port: int) -> None:
    srv, _ = server
    url = sc.ws_url(srv.url("portforward", pb.PortForwardRequest(pod_sandbox_id="p", port=[echo_port])))
    async with websockets.connect(url, subprotocols=[Subprotocol("v4.channel.k8s.io")]) as c:
        first = {await c.recv(), await c.recv()}
        assert first == {b"\x00" + struct.pack("<H", echo_port), b"\x01" + struct.pack("<H", echo_port)}
