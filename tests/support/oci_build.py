"""Build OCI and Docker schema 2 images in code: the builder's whole API, as ``ob.<name>``.

Its parts: :mod:`tests.support.oci_tar` (tar entries, PAX headers, compression) and
:mod:`tests.support.oci_images` (layers, image configs, images, indexes, media types).
Everything is deterministic: same input, same digests.

Here: :func:`write_oci_layout` writes an OCI image layout directory (pushing to a registry is
:mod:`tests.support.registry_client`), and the helpers that build the test images: a busybox
rootfs from Debian's busybox-static with hard-linked applets, a multi-platform index, and large
images for benchmarks. Tar archives that a safe unpacker must refuse live in
:mod:`tests.support.malicious`.
"""

import io
import random
import subprocess
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from tests.support.oci_images import (
    CREATED,
    DEFAULT_PATH,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_ZSTD,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MANIFEST_ACCEPT,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    Image,
    ImageConfig,
    Index,
    Layer,
    Target,
    canonical_json,
    sha256_digest,
)
from tests.support.oci_tar import (
    MTIME,
    Compression,
    Device,
    Dir,
    Entry,
    File,
    Hardlink,
    Opaque,
    Raw,
    Symlink,
    Whiteout,
    build_tar,
    compress,
    decompress,
    entry_header,
    file_caps,
    tar_header,
    tar_padding,
)

BUSYBOX = "/bin/busybox"

# applets linked by busybox_layer(); those the local busybox lacks are left out
COMMON_APPLETS = (
    "[", "[[", "ash", "awk", "basename", "cat", "chmod", "chown", "chroot", "cp", "cut", "date", "dd",
    "df", "dirname", "du", "echo", "env", "expr", "false", "find", "free", "grep", "head", "hostname",
    "id", "ip", "ipcrm", "ipcs", "kill", "killall", "ln", "ls", "md5sum", "mkdir", "mkfifo", "mknod",
    "mount", "mv", "nc", "netstat", "nproc", "nslookup", "pgrep", "pidof", "ping", "pkill", "printf",
    "ps", "pwd", "readlink", "realpath", "rm", "rmdir", "sed", "seq", "setsid", "sh", "sha256sum",
    "sleep", "sort", "stat", "sync", "tail", "tar", "tee", "test", "timeout", "top", "touch", "tr",
    "true", "umount", "uname", "uniq", "usleep", "vi", "wc", "wget", "which", "whoami", "xargs", "yes",
)  # fmt: skip

DEFAULT_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh",
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false",
    "www-data:x:33:33:www-data:/var/www:/bin/false",
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false",
)
DEFAULT_GROUP = ("root:x:0:", "daemon:x:1:", "www-data:x:33:", "nogroup:x:65534:")


# ---------------------------------------------------------------- helpers that build test images


def _applets_available(busybox: str) -> set[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def busybox_entries(
    busybox: str = BUSYBOX,
    applets: Iterable[str] | Literal["all"] = COMMON_APPLETS,
    passwd: Sequence[str] = DEFAULT_PASSWD,
    group: Sequence[str] = DEFAULT_GROUP,
) -> list[Entry]:
    """The entries of :func:`busybox_layer`."""
    available = _applets_available(busybox)
    names = sorted(available if applets == "all" else set(applets) & available)
    entries: list[Entry] = [
        Dir("bin"),
        Dir("dev"),
        Dir("etc"),
        Dir("proc"),
        Dir("root", mode=0o700),
        Dir("sys"),
        Dir("tmp", mode=0o1777),
        Dir("usr"),
        Dir("usr/bin"),
        Dir("var"),
        Dir("var/run"),
        File("bin/busybox", Path(busybox).read_bytes(), mode=0o755),
    ]
    entries += [Hardlink(f"bin/{name}", "bin/busybox") for name in names if name != "busybox"]
    entries += [
        File("etc/passwd", ("\n".join(passwd) + "\n").encode()),
        File("etc/group", ("\n".join(group) + "\n").encode()),
        File("etc/hostname", b"busybox\n"),
    ]
    return entries


def busybox_layer(
    compression: Compression = "gzip",
    *,
    busybox: str = BUSYBOX,
    applets: Iterable[str] | Literal["all"] = COMMON_APPLETS,
    passwd: Sequence[str] = DEFAULT_PASSWD,
    group: Sequence[str] = DEFAULT_GROUP,
) -> Layer:
    """A busybox rootfs: /bin/busybox with its applets as HARD links (masking
    /bin/ls must not mask busybox), /etc/passwd and /etc/group, /tmp, /root."""
    return Layer(busybox_entries(busybox, applets, passwd, group), compression)


def busybox_image(
    compression: Compression = "gzip",
    *,
    config: ImageConfig | None = None,
    extra_layers: Sequence[Layer] = (),
    extra_files: Mapping[str, bytes] | None = None,
    docker: bool = False,
    architecture: str = "amd64",
) -> Image:
    """busybox_layer() [+ one layer of ``extra_files``] [+ ``extra_layers``]."""
    layers = [busybox_layer(compression)]
    if extra_files:
        layers.append(Layer([File(p, d) for p, d in sorted(extra_files.items())], compression))
    layers += extra_layers
    return Image(layers, config, docker=docker, architecture=architecture)


def multiarch_index(docker: bool = False, compression: Compression = "gzip", attestation: bool = False) -> Index:
    """An index of linux/amd64 (busybox + /platform) and linux/arm64/v8 (only a
    /platform file: it is never run here). With ``attestation`` a third entry
    of platform unknown/unknown is added, as buildkit does, which pullers skip."""
    amd64 = Image(
        [busybox_layer(compression), Layer([File("platform", b"linux/amd64\n")], compression)],
        docker=docker,
    )
    arm64 = Image(
        [Layer([Dir("bin"), File("platform", b"linux/arm64/v8\n")], compression)],
        architecture="arm64",
        variant="v8",
        docker=docker,
    )
    images = [amd64, arm64]
    annotations: dict[int, dict[str, str]] = {}
    platforms: dict[int, dict[str, str]] = {}
    if attestation:
        att = Image(
            [Layer([File("attestation.json", b"{}")], compression)],
            docker=docker,
            architecture="unknown",
            os="unknown",
        )
        images.append(att)
        annotations[2] = {
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": amd64.digest,
        }
        platforms[2] = {"architecture": "unknown", "os": "unknown"}
    return Index(images, docker=docker, descriptor_annotations=annotations, platforms=platforms)


class _Prng:
    """Deterministic bytes from a seed, fast enough for gigabytes (random.randbytes in 1 MiB pieces)."""

    CHUNK = 1 << 20

    def __init__(self, seed: int | str) -> None:
        self._random = random.Random(seed)

    def bytes(self, n: int) -> bytes:
        parts = []
        while n > 0:
            take = min(n, self.CHUNK)
            parts.append(self._random.randbytes(take))
            n -= take
        return b"".join(parts)

    def randint(self, a: int, b: int) -> int:
        return self._random.randint(a, b)


def random_files_layer(
    total_bytes: int,
    *,
    file_size: int = 64 << 20,
    seed: int | str = 0,
    compression: Compression = "gzip",
    prefix: str = "data",
) -> Layer:
    """A layer of incompressible files of ``file_size`` (the last one smaller)
    adding up to ``total_bytes``; the tar is written straight into memory."""
    prng = _Prng(seed)
    out = io.BytesIO()
    head = prefix.strip("/")
    out.write(tar_header(entry_header(Dir(head))[0]))
    remaining, i = total_bytes, 0
    while remaining > 0:
        size = min(file_size, remaining)
        info = tarfile.TarInfo(f"{head}/blob-{i:04d}.bin")
        info.size, info.mode, info.mtime = size, 0o644, MTIME
        out.write(tar_header(info))
        written = 0
        while written < size:
            chunk = prng.bytes(min(_Prng.CHUNK * 8, size - written))
            out.write(chunk)
            written += len(chunk)
        out.write(tar_padding(size))
        remaining -= size
        i += 1
    out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    return Layer(compression=compression, tar=out.getvalue())


def small_files_layer(
    count: int = 20_000,
    *,
    max_size: int = 2048,
    per_dir: int = 200,
    seed: int | str = 0,
    compression: Compression = "gzip",
    prefix: str = "small",
) -> Layer:
    """A layer of ``count`` small text-ish files (0..max_size bytes) spread over
    directories of ``per_dir`` files: the metadata-heavy case of unpacking."""
    prng = _Prng(seed)
    pool = prng.bytes(max_size + 4096).hex().encode()
    out = io.BytesIO()
    head = prefix.strip("/")
    out.write(tar_header(entry_header(Dir(head))[0]))
    for i in range(count):
        if i % per_dir == 0:
            out.write(tar_header(entry_header(Dir(f"{head}/d{i // per_dir:04d}"))[0]))
        size = prng.randint(0, max_size)
        start = prng.randint(0, len(pool) - size)
        data = pool[start : start + size]
        info = tarfile.TarInfo(f"{head}/d{i // per_dir:04d}/f{i:06d}.txt")
        info.size, info.mode, info.mtime = size, 0o644, MTIME
        out.write(tar_header(info))
        out.write(data)
        out.write(tar_padding(size))
    out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    return Layer(compression=compression, tar=out.getvalue())


def big_image(
    total_bytes: int,
    *,
    layers: int = 4,
    file_size: int = 64 << 20,
    small_files: int = 20_000,
    seed: int | str = 0,
    compression: Compression = "gzip",
    base: bool = True,
) -> Image:
    """A benchmark image: [busybox] + ``layers`` layers of incompressible files
    sharing ``total_bytes`` + one layer of ``small_files`` small files (0 = none).
    Deterministic for a given seed; different seeds give different blobs."""
    out: list[Layer] = [busybox_layer(compression)] if base else []
    per_layer = -(-total_bytes // layers) if layers else 0
    remaining = total_bytes
    for i in range(layers):
        size = min(per_layer, remaining)
        if size <= 0:
            break
        out.append(
            random_files_layer(
                size, file_size=file_size, seed=f"{seed}/{i}", compression=compression, prefix=f"data{i}"
            )
        )
        remaining -= size
    if small_files:
        out.append(small_files_layer(small_files, seed=f"{seed}/small", compression=compression))
    return Image(out, ImageConfig(cmd=["sleep", "3600"] if base else None))


# ---------------------------------------------------------------- OCI layout


def write_oci_layout(directory: Path, target: Target, ref_name: str | None = "latest") -> Path:
    """An OCI image layout (oci-layout, index.json, blobs/sha256/...) of ``target``."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(digest: str, data: bytes) -> None:
        path = blobs / digest.removeprefix("sha256:")
        if not path.exists():
            path.write_bytes(data)

    for digest, data in iter_blobs(target):
        put(digest, data)
    for digest, data in iter_manifests(target):
        put(digest, data)
    desc: dict[str, Any] = {
        "mediaType": target.media_type,
        "digest": target.digest,
        "size": len(target.manifest_bytes),
    }
    if ref_name:
        desc["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    (directory / "index.json").write_bytes(
        canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [desc]})
    )
    return directory


def iter_blobs(target: Target) -> Iterator[tuple[str, bytes]]:
    """Config and layer blobs of an image or of every image of an index (each once)."""
    seen: set[str] = set()
    images = target.manifests if isinstance(target, Index) else [target]
    for image in images:
        for digest, data in image.blobs():
            if digest not in seen:
                seen.add(digest)
                yield digest, data


def iter_manifests(target: Target) -> Iterator[tuple[str, bytes]]:
    """(digest, bytes) of the manifests, children before the index."""
    if isinstance(target, Index):
        for image in target.manifests:
            yield image.digest, image.manifest_bytes
    yield target.digest, target.manifest_bytes


# the builder's API, also what oci_tar and oci_images define: tests use it as ``ob.<name>``
__all__ = [
    "BUSYBOX",
    "COMMON_APPLETS",
    "CREATED",
    "DEFAULT_GROUP",
    "DEFAULT_PASSWD",
    "DEFAULT_PATH",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_LAYER_ZSTD",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "MANIFEST_ACCEPT",
    "MTIME",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "Compression",
    "Device",
    "Dir",
    "Entry",
    "File",
    "Hardlink",
    "Image",
    "ImageConfig",
    "Index",
    "Layer",
    "Opaque",
    "Raw",
    "Symlink",
    "Target",
    "Whiteout",
    "big_image",
    "build_tar",
    "busybox_entries",
    "busybox_image",
    "busybox_layer",
    "canonical_json",
    "compress",
    "decompress",
    "file_caps",
    "iter_blobs",
    "iter_manifests",
    "multiarch_index",
    "random_files_layer",
    "sha256_digest",
    "small_files_layer",
    "tar_header",
    "write_oci_layout",
]
