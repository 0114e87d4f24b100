"""Port-forward: TCP servers on the host, and in a network namespace the test makes (root only)."""

import asyncio
import contextlib
import hashlib
import os
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cri.errors import FailedPrecondition, InvalidArgument, Unavailable
from cri.runtime import namespaces
from cri.runtime.portforward import CHUNK, forward
from tests.support.daemon import free_port

TIMEOUT = 20.0
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Conn:
    """The client's side of one forwarded connection."""

    def __init__(self, delay: float = 0.0, keep: bool = True, fail: bool = False) -> None:
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self.received = bytearray()
        self.digest = hashlib.sha256()
        self.size = 0
        self.biggest = 0
        self.closed = asyncio.Event()
        self.delay, self.keep, self.fail = delay, keep, fail

    def send(self, data: bytes) -> None:
        self.inbox.put_nowait(data)

    def end(self) -> None:
        self.inbox.put_nowait(b"")

    async def read(self) -> bytes:
        data = await self.inbox.get()
        if not data:
            self.inbox.put_nowait(b"")
        return data

    async def write(self, data: bytes) -> None:
        assert not self.closed.is_set(), "write after close"
        if self.fail:
            raise ConnectionResetError("the client went away")
        self.size += len(data)
        self.biggest = max(self.biggest, len(data))
        self.digest.update(data)
        if self.keep:
            self.received += data
        if self.delay:
            await asyncio.sleep(self.delay)

    async def close(self) -> None:
        self.closed.set()


class Generated(Conn):
    """A client that sends ``total`` bytes of a pattern, made as it is read, then ends."""

    def __init__(self, total: int, **kwargs: bool | float) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.left = total
        self.sent = hashlib.sha256()

    async def read(self) -> bytes:
        n = min(self.left, CHUNK)
        self.left -= n
        data = (bytes(range(256)) * (n // 256 + 1))[:n]
        self.sent.update(data)
        await asyncio.sleep(0)
        return data


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def listener(family: int = socket.AF_INET, address: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(16)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def serving(handler: Handler, sock: socket.socket) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, sock=sock)
    try:
        yield sock.getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_fd_leaks() -> Iterator[None]:
    before = open_fds()
    yield
    assert open_fds() <= before, "file descriptors leaked"


async def run(netns: str | None, port: int, conn: Conn) -> None:
    await asyncio.wait_for(forward(netns, port, conn), TIMEOUT)


# --- the host's network --------------------------------------------------------------------------------


async def test_echo_on_the_host() -> None:
    async with serving(echo, listener()) as port:
        conn = Conn()
        conn.send(b"hello ")
        conn.send(b"world")
        conn.end()
        await run(None, port, conn)
    assert conn.received == b"hello world" and conn.closed.is_set()


async def test_nothing_listening() -> None:
    port = free_port()
    with pytest.raises(FailedPrecondition) as info:
        await run(None, port, Conn())
    text = str(info.value)
    assert f"failed to connect to localhost:{port} in the host's network namespace" in text
    assert "IPv4: Connection refused" in text and "IPv6:" in text


async def test_ipv6_when_ipv4_has_nothing() -> None:
    try:
        sock = listener(socket.AF_INET6, "::1")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    async with serving(echo, sock) as port:  # nothing on 127.0.0.1:port (a port the kernel picked for ::1)
        conn = Conn()
        conn.send(b"over ::1")
        conn.end()
        await run(None, port, conn)
    assert conn.received == b"over ::1"


async def test_client_half_close_then_the_pod_answers() -> None:
    async def reply_after_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()  # to the end of file: the client's half-close
        writer.write(b"got " + request)
        await writer.drain()
        writer.close()

    async with serving(reply_after_eof, listener()) as port:
        conn = Conn()
        conn.send(b"ping")
        conn.end()
        await run(None, port, conn)
    assert conn.received == b"got ping" and conn.closed.is_set()


async def test_pod_half_close_then_the_client_goes_on() -> None:
    got = asyncio.get_running_loop().create_future()

    async def greet_then_listen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        writer.write_eof()  # the pod is done talking, not listening
        got.set_result(await reader.read())
        writer.close()

    async with serving(greet_then_listen, listener()) as port:
        conn = Conn()
        task = asyncio.ensure_future(run(None, port, conn))
        await asyncio.wait_for(conn.closed.wait(), TIMEOUT)  # the client saw the pod's end
        assert conn.received == b"hello" and not task.done()
        conn.send(b"still ")
        conn.send(b"sending")
        conn.end()
        await task
        assert await got == b"still sending"


async def test_pod_resets() -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    async with serving(reset, listener()) as port:
        with pytest.raises(Unavailable, match=f"localhost:{port} in the pod failed: Connection reset"):
            await run(None, port, Conn())


async def test_client_gone() -> None:
    closed = asyncio.get_running_loop().create_future()

    async def chatty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"data")
        await writer.drain()
        closed.set_result(await reader.read())  # the forward's socket closes: end of file
        writer.close()

    async with serving(chatty, listener()) as port:
        with pytest.raises(ConnectionResetError):
            await run(None, port, Conn(fail=True))
        assert await asyncio.wait_for(closed, TIMEOUT) == b""


async def test_invalid_port() -> None:
    with pytest.raises(InvalidArgument):
        await forward(None, 0, Conn())


async def five_mb_through_a_slow_reader(netns: str | None, sock: socket.socket) -> None:
    conn = Generated(5 * 1024 * 1024, delay=0.001, keep=False)
    tracemalloc.start()
    try:
        async with serving(echo, sock) as port:
            await run(netns, port, conn)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert conn.size == 5 * 1024 * 1024 and conn.digest.digest() == conn.sent.digest()
    assert conn.biggest <= CHUNK
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes for a 5 MB echo"


async def test_five_mb_echo_on_the_host() -> None:
    await five_mb_through_a_slow_reader(None, listener())


# --- a pod's network namespace (root only) ------------------------------------------------------------------


@pytest.fixture
def netns(tmp_path: Path) -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    paths = namespaces.create(str(tmp_path), ["net"], "")
    yield paths["net"]
    namespaces.remove(list(paths.values()))


def listener_in(netns: str, family: int = socket.AF_INET, address: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening socket made inside ``netns`` (on a thread of its own: namespaces are per thread)."""

    def make() -> socket.socket:
        with namespaces._entered({"net": netns}):
            return listener(family, address, port)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(make).result()


async def test_echo_in_the_pod(netns: str) -> None:
    port = free_port()  # nothing listens on it on the host: an answer can only come from the pod
    async with serving(echo, listener_in(netns, port=port)):
        conn = Conn()
        conn.send(b"inside")
        conn.end()
        await run(netns, port, conn)
    assert conn.received == b"inside"


async def test_the_pod_is_not_the_host(netns: str) -> None:
    async with serving(echo, listener()) as port:  # on the host only
        with pytest.raises(FailedPrecondition) as info:
            await run(netns, port, Conn())
    text = str(info.value)
    assert f"failed to connect to localhost:{port} inside namespace {netns}" in text
    assert "IPv4: Connection refused" in text and "IPv6: Connection refused" in text


async def test_ipv6_in_the_pod(netns: str) -> None:
    async with serving(echo, listener_in(netns, socket.AF_INET6, "::1")) as port:
        conn = Conn()
        conn.send(b"v6")
        conn.end()
        await run(netns, port, conn)
    assert conn.received == b"v6"


async def test_five_mb_echo_in_the_pod(netns: str) -> None:
    await five_mb_through_a_slow_reader(netns, listener_in(netns))


async def test_netns_gone(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="cannot enter the pod's network namespace"):
        await run(str(tmp_path / "no-such-netns"), 80, Conn())
