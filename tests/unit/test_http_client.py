"""The registry client's HTTP/1.1 (cri/images/http.py) against real servers on loopback:
aiohttp.web for well-behaved ones, raw asyncio servers for the broken ones."""

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from cri.images.http import HttpError, Response, Session

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def web_server(handler: Handler) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def raw_server(handler: RawHandler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def read_head(reader: asyncio.StreamReader) -> bytes:
    return await reader.readuntil(b"\r\n\r\n")


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    async with Session(read_timeout=5.0) as s:
        yield s


async def body(resp: Response) -> bytes:
    async with resp:
        return b"".join([chunk async for chunk in resp.iter_any()])


async def test_kept_alive_connections_are_reused(session: Session) -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(body=b"x" * 1000, headers={"Docker-Content-Digest": "sha256:abc"})

    runner, base = await web_server(handler)
    try:
        for _ in range(3):
            resp = await session.request("GET", f"{base}/v2/")
            assert resp.status == 200 and resp.content_length == 1000
            assert resp.headers["docker-content-digest"] == "sha256:abc"  # names are case-insensitive
            assert await body(resp) == b"x" * 1000
        assert len(peers) == 3 and len(set(peers)) == 1, peers
        # a response given back before its body was read closes its connection
        resp = await session.request("GET", f"{base}/v2/")
        resp.release()
        assert await body(await session.request("GET", f"{base}/v2/")) == b"x" * 1000
        assert len(set(peers)) == 2
    finally:
        await runner.cleanup()


async def test_a_connection_closed_while_idle_is_replaced(session: Session) -> None:
    """The server answers with keep-alive, then closes the connection: the next request
    goes out on a new one, not into the closed one."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server, base = await raw_server(handler)
    try:
        assert await body(await session.request("GET", f"{base}/a")) == b"ok"
        await asyncio.sleep(0.1)  # the close reaches the client's connection while it is idle
        assert await body(await session.request("GET", f"{base}/b")) == b"ok"
        assert connections == 2
    finally:
        server.close()


async def test_a_body_that_breaks_off_is_an_error(session: Session) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"y" * 10)
        await writer.drain()
        writer.close()

    server, base = await raw_server(handler)
    try:
        resp = await session.request("GET", f"{base}/blob")
        with pytest.raises(HttpError):
            await body(resp)
    finally:
        server.close()


async def test_a_silent_server_times_out() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await asyncio.sleep(10)

    server, base = await raw_server(handler)
    try:
        async with Session(read_timeout=0.2) as slow:
            with pytest.raises(TimeoutError):
                await slow.request("GET", f"{base}/manifest")
    finally:
        server.close()


async def test_chunked_bodies_and_repeated_headers(session: Session) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n"
            b'WWW-Authenticate: Basic realm="a"\r\nWWW-Authenticate: Bearer realm="http://t/token"\r\n\r\n'
            b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"
        )
        await writer.drain()

    server, base = await raw_server(handler)
    try:
        resp = await session.request("GET", f"{base}/v2/")
        assert resp.status == 401 and resp.content_length is None
        assert resp.headers.get("www-authenticate") == 'Basic realm="a", Bearer realm="http://t/token"'
        assert resp.headers.get("Location") == ""
        assert await body(resp) == b"abcdefg"
    finally:
        server.close()


async def test_post_sends_its_body(session: Session) -> None:
    async def handler(request: web.Request) -> web.Response:
        form = await request.post()
        return web.json_response({"grant": form["grant_type"], "type": request.content_type})

    runner, base = await web_server(handler)
    try:
        resp = await session.request(
            "POST", f"{base}/token", {"Content-Type": "application/x-www-form-urlencoded"}, b"grant_type=refresh_token"
        )
        assert await body(resp) == b'{"grant": "refresh_token", "type": "application/x-www-form-urlencoded"}'
    finally:
        await runner.cleanup()


async def test_nothing_listening_is_an_error_naming_the_address(session: Session) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refused
        with pytest.raises(HttpError, match=f"cannot connect to 127.0.0.1:{port}"):
            await session.request("GET", f"http://127.0.0.1:{port}/v2/")
    with pytest.raises(HttpError, match="not an http"):
        await session.request("GET", "ftp://127.0.0.1/v2/")
