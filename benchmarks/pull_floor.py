"""The floor of a cold pull on this machine: what the bytes cost with no runtime in the way.

A cold pull downloads the layer blobs, hashes them (sha256 of the compressed bytes: the digest
check), decompresses them, hashes the result (the diff_id check) and extracts the tar streams.
Measured here with plain tools, the layers in parallel as a pull does them:

- download: plain HTTP GETs of the image's layer blobs from the test registry (curl to /dev/null):
  what the registry and loopback cost;
- stream: the same GETs, each blob decompressed (isal) and both sha256s taken in one pass as its
  bytes arrive (a process per layer, started before the clock: http.client, hashlib and isal);
- untar: GNU ``tar -x`` (1 MiB records) of the uncompressed layers (files in the page cache) into fresh dirs on the
  filesystem the runtimes keep their snapshots on;
- floor: all of it at once, as a streaming pull does it: each layer's one-pass stream piped into
  its own ``tar -x``. Neither the sum of stream and untar (both halves overlap in a streaming
  pull) nor the larger of them (on two cores they compete) is the floor; this is. It leaves out
  the content store's copy of each blob (written and fsync'ed by both runtimes): that is part of
  a runtime's overhead over the floor.

The report divides each runtime's cold pull seconds (p50) by the floor (p50) of the same image.
This machine is shared, so the rounds of a run differ by tens of percent: compare p50s.
"""

import fcntl
import hashlib
import http.client
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from isal import isal_zlib

from benchmarks.core import NEEDS_IMAGES, MachineTarget, NotSupported, Params, PushedImage, Row, machine_rows_workload

REPO = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20
TAR_BLOCKING = CHUNK // 512  # tar records of 1 MiB
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


def _stream_one(
    host: str, path: str, media_type: str, out: Path | int | None = None, conn: http.client.HTTPConnection | None = None
) -> tuple[str, str]:
    """GET one blob, decompress it and hash both streams in one pass; returns (digest, diff_id).
    With ``out``, the uncompressed tar also goes there: a file (setup, not timed) or a pipe's fd."""
    gzip = media_type.endswith("gzip")
    if not gzip and not media_type.endswith("tar"):
        raise NotSupported(f"the floor handles gzip and uncompressed layers, not {media_type}")
    conn = conn or http.client.HTTPConnection(host, timeout=TIMEOUT)
    blob, tar = hashlib.sha256(), hashlib.sha256()
    inflate = isal_zlib.decompressobj(31) if gzip else None
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}")
        with open(out if out is not None else "/dev/null", "wb", closefd=not isinstance(out, int)) as sink:
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


def _streamers(image: PushedImage, outs: list[int]) -> list[subprocess.Popen[bytes]]:
    """A process per layer (this module's main) streaming its blob to ``outs[i]``: a process, not a
    thread, so that the layers share no GIL. Each has started, imported and connected, and waits."""
    host, _, _ = _split(image)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pull_floor", host, path, media],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        for (path, media), out in zip(layer_blobs(image), outs, strict=True)
    ]
    for p in procs:
        assert p.stderr is not None
        if p.stderr.readline() != b"ready\n":
            raise RuntimeError(f"the floor's streamer failed: {p.stderr.read().decode(errors='replace')}")
    return procs


def _go(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()


def _check(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        assert p.stderr is not None
        out = p.stderr.read().decode(errors="replace")
        if p.wait(TIMEOUT) != 0 or not out.startswith("ok "):
            raise RuntimeError(f"the floor's streamer failed: {out}")


def stream_seconds(image: PushedImage) -> float:
    procs = _streamers(image, [subprocess.DEVNULL] * len(layer_blobs(image)))
    t0 = time.perf_counter()
    _go(procs)
    for p in procs:
        p.wait(TIMEOUT)
    elapsed = time.perf_counter() - t0
    _check(procs)
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


def _fresh_dirs(workdir: Path, n: int) -> list[Path]:
    dirs = [workdir / f"x-{i}" for i in range(n)]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
    return dirs


def _tar_x(source: Path | None, target: Path) -> subprocess.Popen[bytes]:
    """GNU tar extracting ``source`` (None: its stdin) as root does: owners and modes kept. In
    1 MiB records: its default 10 KiB ones cost it 2.5 times the system time here (a write per
    record), and the floor is what the machine can do."""
    source_arg = str(source) if source else "-"
    args = ["tar", "-x", "-b", str(TAR_BLOCKING), "--same-owner", "-p", "-f", source_arg, "-C", str(target)]
    return subprocess.Popen(args, stdin=subprocess.PIPE if source is None else None)


def _reap(procs: list[subprocess.Popen[bytes]], dirs: list[Path]) -> None:
    codes = [p.wait(TIMEOUT) for p in procs]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if any(codes):
        raise RuntimeError(f"tar -x exited {codes}")


def untar_seconds(tars: list[Path], workdir: Path) -> float:
    dirs = _fresh_dirs(workdir, len(tars))
    t0 = time.perf_counter()
    procs = [_tar_x(tar, d) for tar, d in zip(tars, dirs, strict=True)]
    for p in procs:
        p.wait(TIMEOUT)
    elapsed = time.perf_counter() - t0
    _reap(procs, dirs)
    return elapsed


def floor_seconds(image: PushedImage, workdir: Path) -> float:
    """Each layer streamed (download, decompress, both hashes) into its own ``tar -x``, all at once."""
    dirs = _fresh_dirs(workdir, len(layer_blobs(image)))
    tars = [_tar_x(None, d) for d in dirs]
    pipes = []
    for tar in tars:
        assert tar.stdin is not None
        fcntl.fcntl(tar.stdin.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)  # 1 MiB in flight, not 64 KiB
        pipes.append(tar.stdin.fileno())
    procs = _streamers(image, pipes)
    for tar in tars:
        assert tar.stdin is not None
        tar.stdin.close()  # the streamer holds the pipe now
    t0 = time.perf_counter()
    _go(procs)
    for tar in tars:
        tar.wait(TIMEOUT)
    elapsed = time.perf_counter() - t0
    _check(procs)
    _reap(tars, dirs)
    return elapsed


ROWS = tuple(
    Row(f"{name}.{key}", f"floor, {what} image: {title}")
    for name, what in (("big", "big"), ("small", "small-files"))
    for key, title in (
        ("download", "HTTP download of the layers (curl)"),
        ("stream", "download + isal decompress + both sha256s, one pass"),
        ("untar", "tar -x of the uncompressed layers"),
        ("floor", "all at once: each layer's stream piped into a tar -x"),
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
            # each from a clean page cache state: what the runtimes' GC and earlier rounds left dirty
            # is written out first (untimed), not charged to the next measurement
            os.sync()
            down = download_seconds(image)
            stream = stream_seconds(image)
            os.sync()
            untar = untar_seconds(tars, p.workdir)
            os.sync()
            floor = floor_seconds(image, p.workdir)
            for key, value in (("download", down), ("stream", stream), ("untar", untar), ("floor", floor)):
                samples = out[f"{name}.{key}"]
                assert isinstance(samples, list)
                samples.append(value)
    return out


def main(argv: list[str]) -> None:
    """One layer's streamer (see ``_streamers``): connect, say ready, wait for stdin to close, then
    stream the blob to stdout and report its digests."""
    host, path, media = argv
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    conn.connect()
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    sys.stdin.buffer.read()
    digest, diff_id = _stream_one(host, path, media, out=sys.stdout.fileno(), conn=conn)
    if not path.endswith(digest):
        raise SystemExit(f"{path}: the one-pass download hashes to {digest}")
    sys.stderr.write(f"ok {digest} {diff_id}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
