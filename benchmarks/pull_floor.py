"""The floor of a cold pull on this machine: what the bytes cost with no runtime in the way.

A cold pull downloads the layer blobs, hashes them (sha256 of the compressed bytes: the digest
check), decompresses them, hashes the result (the diff_id check) and extracts the tar streams.
Each half is measured here as the best plain tools do it, the layers in parallel as a pull does:

- download: plain HTTP GETs of the image's layer blobs from the test registry (curl to /dev/null):
  what the registry and loopback cost;
- stream: the same GETs, each blob decompressed (isal) and both sha256s taken in one pass as its
  bytes arrive (a thread per layer; http.client, hashlib and isal release the GIL in their C calls);
- untar: GNU ``tar -x`` of the uncompressed layers (files in the page cache) into fresh dirs on the
  filesystem the runtimes keep their snapshots on;
- floor: stream + untar of the same round. A pull must do both halves on the same two cores, and
  both are CPU-bound here (the writes go to the page cache), so one after the other at full speed is
  the floor a streaming pull gets near, not beats by much. It leaves out the content store's copy
  of the blob (written and fsync'ed by both runtimes): that is the runtime's overhead over the floor.

The report divides each runtime's cold pull seconds (p50) by the floor (p50) of the same image.
"""

import hashlib
import http.client
import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from isal import isal_zlib

from benchmarks.core import NEEDS_IMAGES, MachineTarget, NotSupported, Params, PushedImage, Row, machine_rows_workload

CHUNK = 1 << 20
ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
TIMEOUT = 600.0


def _split(image: PushedImage) -> tuple[str, str, str]:
    """(host:port, repository, tag) of a pushed image's reference."""
    host, _, rest = image.ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    return host, repo, tag


def layer_blobs(image: PushedImage) -> list[tuple[str, str]]:
    """(blob URL path, media type) of each of the image's layers, from its manifest."""
    host, repo, tag = _split(image)
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    try:
        conn.request("GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"manifest of {image.ref}: HTTP {resp.status}")
        manifest = json.loads(resp.read())
    finally:
        conn.close()
    return [(f"/v2/{repo}/blobs/{d['digest']}", str(d["mediaType"])) for d in manifest["layers"]]


def _stream_one(host: str, path: str, media_type: str, out: Path | None = None) -> tuple[str, str]:
    """GET one blob, decompress it and hash both streams in one pass; returns (digest, diff_id).
    With ``out``, the uncompressed tar is also written there (setup, not timed)."""
    gzip = media_type.endswith("gzip")
    if not gzip and not media_type.endswith("tar"):
        raise NotSupported(f"the floor handles gzip and uncompressed layers, not {media_type}")
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    blob, tar = hashlib.sha256(), hashlib.sha256()
    inflate = isal_zlib.decompressobj(31) if gzip else None
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}")
        with open(out, "wb") if out is not None else open("/dev/null", "wb") as sink:
            while chunk := resp.read(CHUNK):
                blob.update(chunk)
                while chunk:  # a gzip stream may be several members
                    data = inflate.decompress(chunk) if inflate is not None else chunk
                    tar.update(data)
                    if out is not None:
                        sink.write(data)
                    chunk = b""
                    if inflate is not None and inflate.eof:
                        chunk = inflate.unused_data
                        inflate = isal_zlib.decompressobj(31)
    finally:
        conn.close()
    return "sha256:" + blob.hexdigest(), "sha256:" + tar.hexdigest()


def download_seconds(image: PushedImage) -> float:
    host, _, _ = _split(image)
    blobs = layer_blobs(image)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sSf", "-o", "/dev/null", f"http://{host}{path}"]) for path, _ in blobs]
    codes = [p.wait(TIMEOUT) for p in procs]
    elapsed = time.perf_counter() - t0
    if any(codes):
        raise RuntimeError(f"curl of {image.ref}'s blobs exited {codes}")
    return elapsed


def stream_seconds(image: PushedImage) -> float:
    host, _, _ = _split(image)
    blobs = layer_blobs(image)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(len(blobs)) as pool:
        digests = list(pool.map(lambda blob: _stream_one(host, *blob), blobs))
    elapsed = time.perf_counter() - t0
    for (path, _), got in zip(blobs, digests, strict=True):
        if not path.endswith(got[0]):
            raise RuntimeError(f"{path}: the one-pass download hashes to {got}")
    return elapsed


def layer_tars(image: PushedImage, workdir: Path) -> list[Path]:
    """The image's uncompressed layers as files in ``workdir`` (made once, read once into the page cache)."""
    host, _, _ = _split(image)
    tars = []
    for path, media in layer_blobs(image):
        tar = workdir / f"{path.rsplit(':', 1)[-1][:16]}.tar"
        if not tar.exists():
            part = tar.with_suffix(".part")
            _stream_one(host, path, media, part)
            part.rename(tar)
        with open(tar, "rb") as f:
            while f.read(CHUNK * 8):
                pass
        tars.append(tar)
    return tars


def untar_seconds(tars: list[Path], workdir: Path) -> float:
    dirs = [workdir / f"x-{i}" for i in range(len(tars))]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(["tar", "-x", "--same-owner", "-p", "-f", str(tar), "-C", str(d)])
        for tar, d in zip(tars, dirs, strict=True)
    ]
    codes = [p.wait(TIMEOUT) for p in procs]
    elapsed = time.perf_counter() - t0
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if any(codes):
        raise RuntimeError(f"tar -x exited {codes}")
    return elapsed


ROWS = tuple(
    Row(f"{name}.{key}", f"floor, {what} image: {title}")
    for name, what in (("big", "big"), ("small", "small-files"))
    for key, title in (
        ("download", "HTTP download of the layers (curl)"),
        ("stream", "download + isal decompress + both sha256s, one pass"),
        ("untar", "tar -x of the uncompressed layers"),
        ("floor", "stream + untar"),
    )
)


@machine_rows_workload("pull_floor", ROWS, runs=3, needs_images=True)
def pull_floor(t: MachineTarget, p: Params) -> dict[str, list[float] | NotSupported]:
    if p.images is None:
        raise NotSupported(NEEDS_IMAGES)
    out: dict[str, list[float] | NotSupported] = {row.key: [] for row in ROWS}
    for name, image in (("big", p.images.big), ("small", p.images.small)):
        tars = layer_tars(image, p.workdir)
        for _ in range(p.count):
            down = download_seconds(image)
            stream = stream_seconds(image)
            untar = untar_seconds(tars, p.workdir)
            for key, value in (("download", down), ("stream", stream), ("untar", untar), ("floor", stream + untar)):
                samples = out[f"{name}.{key}"]
                assert isinstance(samples, list)
                samples.append(value)
    return out
