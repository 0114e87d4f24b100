"""The registry client against small in-process HTTP servers: redirects
without credentials, Range resume after a broken download, retries on 5xx,
auth challenges, and host fallback."""

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from cri.errors import FailedPrecondition, NotFound, PermissionDenied, Unavailable
from cri.images import registry as registry_mod
from cri.images.auth import Credentials, TokenCache
from cri.images.content import ContentStore
from cri.images.hosts import RegistryHost
from cri.images.http import Session
from cri.images.registry import Repository, new_session

DATA = os.urandom(300_000)
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_route("*", path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"127.0.0.1:{port}"


@pytest.fixture
async def session() -> AsyncIterator[Session]:
    async with new_session(10.0) as s:
        yield s


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_mod, "BACKOFF_SECONDS", (0.01, 0.01, 0.01))


def repo(session: Session, *netlocs: str, creds: Credentials | None = None) -> Repository:
    hosts = [RegistryHost("http", n) for n in netlocs]
    return Repository(session, hosts, "reg.test", "lib/x", creds or Credentials(), TokenCache())


async def fetch(r: Repository, tmp_path: Path) -> bytes:
    store = ContentStore(str(tmp_path))
    sink = store.writer(DIGEST, len(DATA))
    try:
        await r.blob(DIGEST, len(DATA), sink, lambda n: None)
        await sink.commit()
    finally:
        sink.discard()
    return store.read(DIGEST)


async def test_redirect_to_another_host_drops_credentials(session: Session, tmp_path: Path) -> None:
    seen: list[str | None] = []

    async def storage(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=DATA)

    store_runner, store_host = await serve({"/blob": storage})

    async def blob(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != Credentials("u", "p").basic_header():
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        raise web.HTTPTemporaryRedirect(f"http://{store_host}/blob")

    reg_runner, reg_host = await serve({f"/v2/lib/x/blobs/{DIGEST}": blob})
    try:
        assert await fetch(repo(session, reg_host, creds=Credentials("u", "p")), tmp_path) == DATA
        assert seen == [None]
    finally:
        await reg_runner.cleanup()
        await store_runner.cleanup()


async def test_broken_download_resumes_with_range(session: Session, tmp_path: Path) -> None:
    ranges: list[str | None] = []

    async def blob(request: web.Request) -> web.StreamResponse:
        rng = request.headers.get("Range")
        ranges.append(rng)
        if rng is None:  # first attempt: send half, then drop the connection
            resp = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
            await resp.prepare(request)
            await resp.write(DATA[: len(DATA) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        return web.Response(
            status=206, body=DATA[start:], headers={"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"}
        )

    runner, host = await serve({f"/v2/lib/x/blobs/{DIGEST}": blob})
    try:
        assert await fetch(repo(session, host), tmp_path) == DATA
        assert ranges[0] is None and ranges[1] is not None and ranges[1] != "bytes=0-"
    finally:
        await runner.cleanup()


async def test_server_ignoring_range_starts_over(session: Session, tmp_path: Path) -> None:
    calls = 0

    async def blob(request: web.Request) -> web.StreamResponse:
        nonlocal calls
        calls += 1
        if calls == 1:
            resp = web.StreamResponse(headers={"Content-Length": str(len(DATA))})
            await resp.prepare(request)
            await resp.write(DATA[:1000])
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=DATA)  # 200 with the whole blob despite the Range header

    runner, host = await serve({f"/v2/lib/x/blobs/{DIGEST}": blob})
    try:
        assert await fetch(repo(session, host), tmp_path) == DATA
    finally:
        await runner.cleanup()


async def test_5xx_is_retried_then_reported(session: Session, tmp_path: Path) -> None:
    calls = 0

    async def flaky(request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        return web.Response(status=503) if calls < 3 else web.Response(body=DATA)

    runner, host = await serve({f"/v2/lib/x/blobs/{DIGEST}": flaky})
    try:
        assert await fetch(repo(session, host), tmp_path) == DATA
        assert calls == 3
    finally:
        await runner.cleanup()

    async def down(request: web.Request) -> web.Response:
        return web.Response(status=502)

    runner, host = await serve({f"/v2/lib/x/blobs/{DIGEST}": down})
    try:
        with pytest.raises(Unavailable, match="HTTP 502"):
            await fetch(repo(session, host), tmp_path)
    finally:
        await runner.cleanup()


async def test_oversized_blob_is_cut_off(session: Session, tmp_path: Path) -> None:
    async def blob(request: web.Request) -> web.Response:
        return web.Response(body=DATA + b"more")

    runner, host = await serve({f"/v2/lib/x/blobs/{DIGEST}": blob})
    try:
        with pytest.raises(FailedPrecondition, match="larger than its descriptor"):
            await fetch(repo(session, host), tmp_path)
        assert os.listdir(tmp_path / "content" / "ingest") == []
    finally:
        await runner.cleanup()


async def test_manifest_fallback_and_not_found(session: Session) -> None:
    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def manifest(request: web.Request) -> web.Response:
        return web.Response(body=b"{}", content_type="application/vnd.oci.image.manifest.v1+json")

    r1, mirror = await serve({"/v2/lib/x/manifests/v1": missing})
    r2, origin = await serve({"/v2/lib/x/manifests/v1": manifest})
    try:
        got = await repo(session, mirror, origin).manifest("v1", "*/*", resolve=True)
        assert got.body == b"{}" and got.host.netloc == origin
        with pytest.raises(NotFound, match="not found"):
            await repo(session, mirror).manifest("v1", "*/*", resolve=True)
    finally:
        await r1.cleanup()
        await r2.cleanup()


async def test_bearer_flow_and_token_cache(session: Session) -> None:
    token_requests: list[dict[str, str]] = []

    async def token(request: web.Request) -> web.Response:
        token_requests.append(dict(request.query))
        if request.headers.get("Authorization") != Credentials("u", "p").basic_header():
            return web.Response(status=401)
        return web.json_response({"token": "T0K", "expires_in": 300})

    r_tok, tok_host = await serve({"/token": token})

    async def manifest(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer T0K":
            challenge = f'Bearer realm="http://{tok_host}/token",service="reg",scope="repository:lib/x:pull"'
            return web.Response(status=401, headers={"WWW-Authenticate": challenge})
        return web.Response(body=b"{}")

    r_reg, reg_host = await serve({"/v2/lib/x/manifests/v1": manifest})
    try:
        tokens = TokenCache()
        hosts = [RegistryHost("http", reg_host)]
        for _ in range(2):
            r = Repository(session, hosts, "reg", "lib/x", Credentials("u", "p"), tokens)
            assert (await r.manifest("v1", "*/*", resolve=True)).body == b"{}"
        assert token_requests == [{"service": "reg", "scope": "repository:lib/x:pull"}]  # cached the 2nd time
        bad = Repository(session, hosts, "reg", "lib/x", Credentials("u", "nope"), tokens)
        with pytest.raises(PermissionDenied, match="refused the credentials") as err:
            await bad.manifest("v1", "*/*", resolve=True)
        assert "nope" not in str(err.value)
    finally:
        await r_reg.cleanup()
        await r_tok.cleanup()


def dead_host() -> str:
    """A loopback port nobody listens on."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def dribble(request: web.Request, body: bytes, chunk: int = 700) -> web.StreamResponse:
    """Send ``body`` in small pieces with pauses, as a busy registry or proxy does
    (chunked, without a length, when the query says so)."""
    import asyncio

    resp = web.StreamResponse(headers={"Content-Type": "application/vnd.oci.image.index.v1+json"})
    if "/lib/chunked/" in request.path:
        resp.enable_chunked_encoding()
    else:
        resp.content_length = len(body)
    await resp.prepare(request)
    for i in range(0, len(body), chunk):
        await resp.write(body[i : i + chunk])
        await asyncio.sleep(0.002)
    await resp.write_eof()
    return resp


async def test_bodies_are_read_to_their_end(session: Session) -> None:
    """Bodies arrive in pieces (chunked, or split by the network); manifests and configs must come whole."""
    index = b'{"manifests": [' + b",".join(b'{"digest": "sha256:%064d"}' % i for i in range(60)) + b"]}"
    config = os.urandom(15_000)
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()

    async def manifest(request: web.Request) -> web.StreamResponse:
        return await dribble(request, index)

    async def blob(request: web.Request) -> web.StreamResponse:
        return await dribble(request, config)

    routes: dict[str, Handler] = {}
    for path in ("lib/x", "lib/chunked"):
        routes[f"/v2/{path}/manifests/v1"] = manifest
        routes[f"/v2/{path}/blobs/{config_digest}"] = blob
    runner, host = await serve(routes)
    try:
        r = repo(session, host)
        chunked = Repository(
            session, [RegistryHost("http", host)], "reg.test", "lib/chunked", Credentials(), TokenCache()
        )
        for _ in range(3):
            for each in (r, chunked):
                assert (await each.manifest("v1", "*/*", resolve=True)).body == index
                assert await each.blob_bytes(config_digest, len(config), 1 << 20) == config
        with pytest.raises(FailedPrecondition, match="size mismatch: 15000 bytes announced, 14981 in its descriptor"):
            await r.blob_bytes(config_digest, 14981, 1 << 20)
        with pytest.raises(FailedPrecondition, match="size mismatch: got 15000 bytes, expected 14981"):
            await chunked.blob_bytes(config_digest, 14981, 1 << 20)
    finally:
        await runner.cleanup()


async def test_definitive_answers_end_the_pull(session: Session) -> None:
    """Over-limit bodies and refused credentials are the answer; a dead host after
    them must not bury it under a connection error."""
    from cri.images.registry import MANIFEST_MAX_BYTES

    big = b" " * (MANIFEST_MAX_BYTES + 1)

    async def too_big(request: web.Request) -> web.Response:
        return web.Response(body=big)

    async def locked(request: web.Request) -> web.Response:
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    async def missing(request: web.Request) -> web.Response:
        return web.Response(status=404)

    r1, big_host = await serve({"/v2/lib/x/manifests/v1": too_big})
    r2, locked_host = await serve({"/v2/lib/x/manifests/v1": locked})
    r3, empty_host = await serve({"/v2/lib/x/manifests/v1": missing})
    dead = dead_host()
    try:
        with pytest.raises(FailedPrecondition, match="over the 4194304 byte limit") as err:
            await repo(session, big_host, dead).manifest("v1", "*/*", resolve=True)
        assert dead not in str(err.value)
        with pytest.raises(PermissionDenied, match="refused the given credentials") as denied:
            await repo(session, locked_host, dead, creds=Credentials("u", "p")).manifest("v1", "*/*", resolve=True)
        assert dead not in str(denied.value)
        # a 404 (or anonymous refusal) tries the next host, as containerd does, and outranks its connection error
        with pytest.raises(NotFound, match=f"not found on {empty_host}") as nf:
            await repo(session, empty_host, dead).manifest("v1", "*/*", resolve=True)
        assert dead not in str(nf.value)
        with pytest.raises(PermissionDenied, match="no usable credentials"):
            await repo(session, locked_host, dead).manifest("v1", "*/*", resolve=True)
        with pytest.raises(Unavailable, match=dead):
            await repo(session, dead).manifest("v1", "*/*", resolve=True)
    finally:
        for r in (r1, r2, r3):
            await r.cleanup()
