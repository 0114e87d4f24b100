"""An in-process registry and an image store for the pull pipeline's tests
(tests/unit/test_pull_pipeline.py, test_layer_process.py); the fixtures are
registered in tests/unit/conftest.py."""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from cri.config import from_dict
from cri.images.manager import Images
from cri.store import Store
from tests.support import oci_build as ob


class FakeRegistry:
    """Serves images by tag and their blobs, with Range; can break a blob's first
    download off after some bytes, ignore Range, or send blobs slowly."""

    def __init__(self) -> None:
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.blobs: dict[str, bytes] = {}
        self.gets: list[tuple[str, str | None]] = []  # (digest, Range header)
        self.break_after: dict[str, int] = {}  # digest -> bytes sent by its first GET before the connection drops
        self.ignore_range = False
        self.slow = 0.0  # seconds between 64 KiB pieces
        self.host = ""

    def add(self, tag: str, image: ob.Image, blobs: dict[str, bytes] | None = None) -> None:
        self.manifests[tag] = (image.manifest_bytes, image.media_type)
        self.blobs[image.config_digest] = image.config_bytes
        for layer in image.layers:
            self.blobs[layer.digest] = layer.blob
        self.blobs.update(blobs or {})

    def downloads(self, digest: str) -> int:
        return sum(1 for d, _ in self.gets if d == digest)

    async def _manifest(self, request: web.Request) -> web.Response:
        body, media = self.manifests[request.match_info["ref"]]
        return web.Response(body=body, headers={"Content-Type": media})

    async def _blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        data = self.blobs.get(digest)
        if data is None:
            return web.Response(status=404)
        rng = request.headers.get("Range")
        first = self.downloads(digest) == 0
        self.gets.append((digest, rng))
        start = int(rng.removeprefix("bytes=").rstrip("-")) if rng and not self.ignore_range else 0
        headers = {"Content-Length": str(len(data) - start)}
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        resp = web.StreamResponse(status=206 if start else 200, headers=headers)
        await resp.prepare(request)
        stop = self.break_after.get(digest) if first else None
        body = data[start:stop]
        for i in range(0, len(body), 64 << 10):
            await resp.write(body[i : i + (64 << 10)])
            if self.slow:
                await asyncio.sleep(self.slow)
        if stop is not None:
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp

    async def serve(self) -> web.AppRunner:
        app = web.Application()
        app.router.add_get("/v2/{name:.+}/manifests/{ref}", self._manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self._blob)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.host = f"127.0.0.1:{runner.addresses[0][1]}"
        return runner


@pytest.fixture
async def registry() -> AsyncIterator[FakeRegistry]:
    reg = FakeRegistry()
    runner = await reg.serve()
    yield reg
    await runner.cleanup()


@pytest.fixture
async def images(tmp_path: Path) -> AsyncIterator[Images]:
    root = tmp_path / "root"
    config = from_dict(
        {"root_dir": str(root), "state_dir": str(tmp_path / "run"), "images": {"registry_config_dir": str(tmp_path)}}
    )
    root.mkdir()
    imgs = Images(config, Store(str(root)))
    yield imgs
    await imgs.close()
