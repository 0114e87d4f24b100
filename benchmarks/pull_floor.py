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
  the content store's copy of each blob;
- stored: the floor with that copy, as both runtimes keep it: each streamer also writes the blob's
  bytes to a file beside the tar's and fsyncs it at its end (containerd's content store and
  crid's fsync each blob before they record it; neither syncs the unpacked files). What a pull
  that keeps its blobs durably cannot beat: the disk writes them while the rest goes on.

The report divides each runtime's cold pull seconds (p50) by the floor and by the stored floor
(p50s) of the same image.
This machine is shared, so the rounds of a run differ by tens of percent: compare p50s.
"""

import ctypes
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

from benchmarks import commands
from benchmarks.core import NEEDS_IMAGES, MachineTarget, NotSupported, Params, PushedImage, Row, machine_rows_workload

REPO = Path(__file__).resolve().parent.parent
CHUNK = 1 << 20
TAR_BLOCKING = CHUNK // 512  # tar records of 1 MiB
WRITEBACK_BYTES = 8 * CHUNK
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded once: the stored floor calls it every 8 MiB
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
    host: str,
    path: str,
    media_type: str,
    out: Path | int | None = None,
    conn: http.client.HTTPConnection | None = None,
    blob: int | None = None,
) -> tuple[str, str]:
    """GET one blob, decompress it and hash both streams in one pass; returns (digest, diff_id).
    With ``out``, the uncompressed tar also goes there: a file (setup, not timed) or a pipe's fd.
    With ``blob`` (a file's fd), the blob's own bytes go there too, fsync'ed at the end."""
    gzip = media_type.endswith("gzip")
    if not gzip and not media_type.endswith("tar"):
        raise NotSupported(f"the floor handles gzip and uncompressed layers, not {media_type}")
    conn = conn or http.client.HTTPConnection(host, timeout=TIMEOUT)
    digest, tar = hashlib.sha256(), hashlib.sha256()
    inflate = isal_zlib.decompressobj(31) if gzip else None
    written = synced = 0
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"{path}: HTTP {resp.status}")
        with open(out if out is not None else "/dev/null", "wb", closefd=not isinstance(out, int)) as sink:
            while chunk := resp.read(CHUNK):
                digest.update(chunk)
                if blob is not None:
                    _write_all(blob, chunk)
                    written += len(chunk)
                    if written - synced >= WRITEBACK_BYTES:
                        _start_writeback(blob, synced, written - synced)
                        synced = written
                while chunk:  # a gzip stream may be several members
                    data = inflate.decompress(chunk) if inflate is not None else chunk
                    tar.update(data)
                    if out is not None:
                        sink.write(data)
                    chunk = b""
                    if inflate is not None and inflate.eof:
                        chunk = inflate.unused_data
                        inflate = isal_zlib.decompressobj(31)
        if blob is not None:
            os.fsync(blob)
    finally:
        conn.close()
    return "sha256:" + digest.hexdigest(), "sha256:" + tar.hexdigest()


def _start_writeback(fd: int, offset: int, nbytes: int) -> None:
    """sync_file_range(SYNC_FILE_RANGE_WRITE): the disk starts on these pages now, and the fsync at
    the end waits for less (as crid's content store does; containerd's only fsyncs at the end)."""
    _LIBC.sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(nbytes), 2)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def download_seconds(image: PushedImage) -> float:
    host, _, _ = _split(image)
    blobs = layer_blobs(image)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(["curl", "-sSf", "-o", "/dev/null", f"http://{host}{path}"]) for path, _ in blobs]
    codes = [commands.wait(p, TIMEOUT) for p in procs]
    elapsed = time.perf_counter() - t0
    if any(codes):
        raise RuntimeError(f"curl of {image.ref}'s blobs exited {codes}")
    return elapsed


def _streamers(image: PushedImage, outs: list[int], blobs: list[Path] | None = None) -> list[subprocess.Popen[bytes]]:
    """A process per layer (this module's main) streaming its blob to ``outs[i]`` (and its bytes to the
    file ``blobs[i]``): a process, not a thread, so that the layers share no GIL. Each has started,
    imported, connected and opened its files, and waits."""
    host, _, _ = _split(image)
    layers = layer_blobs(image)
    blob_args = [[str(b)] for b in blobs] if blobs is not None else [[] for _ in layers]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.pull_floor", host, path, media, *blob_arg],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.PIPE,
            cwd=REPO,
        )
        for (path, media), out, blob_arg in zip(layers, outs, blob_args, strict=True)
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
        if commands.wait(p, TIMEOUT) != 0 or not out.startswith("ok "):
            raise RuntimeError(f"the floor's streamer failed: {out}")


def stream_seconds(image: PushedImage) -> float:
    procs = _streamers(image, [subprocess.DEVNULL] * len(layer_blobs(image)))
    t0 = time.perf_counter()
    _go(procs)
    for p in procs:
        commands.wait(p, TIMEOUT)
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
    codes = [commands.wait(p, TIMEOUT) for p in procs]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    if any(codes):
        raise RuntimeError(f"tar -x exited {codes}")


def untar_seconds(tars: list[Path], workdir: Path) -> float:
    dirs = _fresh_dirs(workdir, len(tars))
    t0 = time.perf_counter()
    procs = [_tar_x(tar, d) for tar, d in zip(tars, dirs, strict=True)]
    for p in procs:
        commands.wait(p, TIMEOUT)
    elapsed = time.perf_counter() - t0
    _reap(procs, dirs)
    return elapsed


def floor_seconds(image: PushedImage, workdir: Path, stored: bool = False) -> float:
    """Each layer streamed (download, decompress, both hashes) into its own ``tar -x``, all at once;
    ``stored``: each blob's bytes also written to a file in ``workdir`` and fsync'ed."""
    dirs = _fresh_dirs(workdir, len(layer_blobs(image)))
    blobs = [d.with_suffix(".blob") for d in dirs] if stored else None
    for b in blobs or ():
        b.unlink(missing_ok=True)
    tars = [_tar_x(None, d) for d in dirs]
    pipes = []
    for tar in tars:
        assert tar.stdin is not None
        fcntl.fcntl(tar.stdin.fileno(), fcntl.F_SETPIPE_SZ, CHUNK)  # 1 MiB in flight, not 64 KiB
        pipes.append(tar.stdin.fileno())
    procs = _streamers(image, pipes, blobs)
    for tar in tars:
        assert tar.stdin is not None
        tar.stdin.close()  # the streamer holds the pipe now
    t0 = time.perf_counter()
    _go(procs)
    for proc in (*tars, *procs):  # a streamer's fsync ends its pass
        commands.wait(proc, TIMEOUT)
    elapsed = time.perf_counter() - t0
    _check(procs)
    _reap(tars, dirs)
    for b in blobs or ():
        b.unlink()
    return elapsed


ROWS = tuple(
    Row(f"{name}.{key}", f"floor, {what} image: {title}")
    for name, what in (("big", "big"), ("small", "small-files"))
    for key, title in (
        ("download", "HTTP download of the layers (curl)"),
        ("stream", "download + isal decompress + both sha256s, one pass"),
        ("untar", "tar -x of the uncompressed layers"),
        ("floor", "all at once: each layer's stream piped into a tar -x"),
        ("stored", "all at once, and each blob written and fsync'ed as a content store keeps it"),
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
            os.sync()
            stored = floor_seconds(image, p.workdir, stored=True)
            values = (("download", down), ("stream", stream), ("untar", untar), ("floor", floor), ("stored", stored))
            for key, value in values:
                samples = out[f"{name}.{key}"]
                assert isinstance(samples, list)
                samples.append(value)
    return out


def main(argv: list[str]) -> None:
    """One layer's streamer (see ``_streamers``): connect, say ready, wait for stdin to close, then
    stream the blob to stdout and report its digests."""
    host, path, media, *blob_file = argv
    conn = http.client.HTTPConnection(host, timeout=TIMEOUT)
    conn.connect()
    blob = os.open(blob_file[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644) if blob_file else None
    sys.stderr.write("ready\n")
    sys.stderr.flush()
    sys.stdin.buffer.read()
    digest, diff_id = _stream_one(host, path, media, out=sys.stdout.fileno(), conn=conn, blob=blob)
    if not path.endswith(digest):
        raise SystemExit(f"{path}: the one-pass download hashes to {digest}")
    sys.stderr.write(f"ok {digest} {diff_id}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
