"""Build OCI and Docker schema 2 images in code.

A :class:`Layer` is a list of entries (files, dirs, links, whiteouts, raw tar
headers) written as a PAX tar (so xattrs such as ``security.capability``
survive) and compressed with gzip, zstd or nothing. An :class:`Image` is
layers plus an :class:`ImageConfig`; it renders the config blob and an OCI
manifest or, with ``docker=True``, a Docker schema 2 manifest. An
:class:`Index` is an OCI index or a Docker manifest list over several images.
Everything is deterministic: same input, same digests.

:func:`write_oci_layout` writes an OCI image layout directory; pushing to a
registry is :mod:`tests.support.registry_client`. Helpers build the test images: a busybox rootfs
from Debian's busybox-static with hard-linked applets, a multi-platform
index, and large images for benchmarks. Tar archives that a safe unpacker
must refuse live in :mod:`tests.support.malicious`.
"""

import functools
import gzip
import hashlib
import io
import json
import random
import subprocess
import tarfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import zstandard
from isal import igzip

Compression = Literal["gzip", "zstd", "none"]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

OCI_LAYER_TYPES: dict[str, str] = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
DOCKER_LAYER_TYPES: dict[str, str] = {
    "none": DOCKER_LAYER,
    "gzip": DOCKER_LAYER_GZIP,
    "zstd": DOCKER_LAYER_ZSTD,
}

# all manifests kinds a client may be sent, best first
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

MTIME = 1_700_000_000  # every entry's default mtime: builds are reproducible
CREATED = "2024-01-01T00:00:00Z"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
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


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The bytes a config or manifest is pushed as (compact, key order kept)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


# ---------------------------------------------------------------- entries


def _clean(path: str) -> str:
    return path.lstrip("/")


@dataclass(frozen=True)
class File:
    path: str
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    mtime: int = MTIME


@dataclass(frozen=True)
class Dir:
    path: str
    mode: int = 0o755
    uid: int = 0
    gid: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    mtime: int = MTIME


@dataclass(frozen=True)
class Symlink:
    path: str
    target: str
    uid: int = 0
    gid: int = 0
    mtime: int = MTIME


@dataclass(frozen=True)
class Hardlink:
    """A hard link; ``target`` is the archive path of an earlier entry (``bin/busybox``)."""

    path: str
    target: str
    mtime: int = MTIME


@dataclass(frozen=True)
class Whiteout:
    """Deletes ``path`` from lower layers: written as ``dir/.wh.name``."""

    path: str


@dataclass(frozen=True)
class Opaque:
    """Hides everything lower layers have under the directory ``path``: ``path/.wh..wh..opq``."""

    path: str


@dataclass(frozen=True)
class Device:
    """A character (``kind="c"``), block (``"b"``) device or a fifo (``"p"``)."""

    path: str
    kind: Literal["c", "b", "p"] = "c"
    major: int = 0
    minor: int = 0
    mode: int = 0o666


@dataclass(frozen=True)
class Raw:
    """A tar header written exactly as given (name not cleaned): for hostile archives."""

    info: tarfile.TarInfo
    data: bytes = b""


Entry = File | Dir | Symlink | Hardlink | Whiteout | Opaque | Device | Raw


def file_caps(permitted: int, effective: bool = True, inheritable: int = 0) -> bytes:
    """A ``security.capability`` xattr value (VFS_CAP_REVISION_2), e.g.
    ``file_caps(1 << 13)`` for CAP_NET_RAW."""
    magic = 0x02000000 | (1 if effective else 0)
    parts = (magic, permitted & 0xFFFFFFFF, inheritable & 0xFFFFFFFF, permitted >> 32, inheritable >> 32)
    return b"".join(p.to_bytes(4, "little") for p in parts)


def _xattr_headers(xattrs: Mapping[str, bytes]) -> dict[str, str]:
    return {f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}


def _header(entry: Entry) -> tuple[tarfile.TarInfo, bytes]:
    if isinstance(entry, Raw):
        return entry.info, entry.data
    data = b""
    if isinstance(entry, File):
        info = tarfile.TarInfo(_clean(entry.path))
        info.type, info.mode, data = tarfile.REGTYPE, entry.mode, entry.data
        info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
        info.pax_headers = _xattr_headers(entry.xattrs)
    elif isinstance(entry, Dir):
        info = tarfile.TarInfo(_clean(entry.path).rstrip("/"))
        info.type, info.mode = tarfile.DIRTYPE, entry.mode
        info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
        info.pax_headers = _xattr_headers(entry.xattrs)
    elif isinstance(entry, Symlink):
        info = tarfile.TarInfo(_clean(entry.path))
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
        info.uid, info.gid, info.mtime = entry.uid, entry.gid, entry.mtime
    elif isinstance(entry, Hardlink):
        info = tarfile.TarInfo(_clean(entry.path))
        info.type, info.linkname, info.mode, info.mtime = (
            tarfile.LNKTYPE,
            _clean(entry.target),
            0o755,
            entry.mtime,
        )
    elif isinstance(entry, Whiteout):
        head, _, name = _clean(entry.path).rstrip("/").rpartition("/")
        info = tarfile.TarInfo(f"{head}/.wh.{name}" if head else f".wh.{name}")
        info.type, info.mode, info.mtime = tarfile.REGTYPE, 0o644, MTIME
    elif isinstance(entry, Opaque):
        head = _clean(entry.path).rstrip("/")
        info = tarfile.TarInfo(f"{head}/.wh..wh..opq" if head else ".wh..wh..opq")
        info.type, info.mode, info.mtime = tarfile.REGTYPE, 0o644, MTIME
    else:
        info = tarfile.TarInfo(_clean(entry.path))
        info.type = {"c": tarfile.CHRTYPE, "b": tarfile.BLKTYPE, "p": tarfile.FIFOTYPE}[entry.kind]
        info.devmajor, info.devminor, info.mode, info.mtime = entry.major, entry.minor, entry.mode, MTIME
    info.size = len(data)
    return info, data


def tar_header(info: tarfile.TarInfo) -> bytes:
    """One PAX tar header as bytes (no data)."""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _pad(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def build_tar(entries: Iterable[Entry]) -> bytes:
    """A PAX tar stream of ``entries`` in order; names are written as given,
    nothing is checked or reordered."""
    out = io.BytesIO()
    for entry in entries:
        info, data = _header(entry)
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            info.size = len(data)
        else:
            data = b""
            info.size = 0
        out.write(tar_header(info))
        out.write(data)
        out.write(_pad(len(data)))
    out.write(b"\0" * (2 * tarfile.BLOCKSIZE))
    return out.getvalue()


def compress(data: bytes, compression: Compression, level: int | None = None) -> bytes:
    if compression == "none":
        return data
    if compression == "gzip":
        # isal (levels 0-3) is many times faster than zlib on big layers
        return bytes(igzip.compress(data, 1 if level is None else min(level, 3), mtime=0))
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3 if level is None else level).compress(data)
    raise ValueError(f"unknown compression {compression!r}")


def decompress(blob: bytes, compression: Compression) -> bytes:
    if compression == "none":
        return blob
    if compression == "gzip":
        return gzip.decompress(blob)
    return zstandard.ZstdDecompressor().decompressobj().decompress(blob)


# ---------------------------------------------------------------- layers, images, indexes


class Layer:
    """One layer: entries (or ready tar bytes) plus a compression.

    ``media_type`` overrides the media type of the descriptor (e.g. a
    non-distributable or an unknown type); ``blob`` overrides the compressed
    bytes (e.g. a corrupt stream) while ``diff_id`` stays the tar's.
    """

    def __init__(
        self,
        entries: Sequence[Entry] = (),
        compression: Compression = "gzip",
        *,
        tar: bytes | None = None,
        level: int | None = None,
        media_type: str | None = None,
        blob: bytes | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        self.entries = tuple(entries)
        self.compression: Compression = compression
        self._tar = tar
        self._level = level
        self._media_type = media_type
        self._blob = blob
        self.annotations = dict(annotations or {})

    @functools.cached_property
    def tar(self) -> bytes:
        return self._tar if self._tar is not None else build_tar(self.entries)

    @functools.cached_property
    def blob(self) -> bytes:
        return self._blob if self._blob is not None else compress(self.tar, self.compression, self._level)

    @functools.cached_property
    def diff_id(self) -> str:
        return sha256_digest(self.tar)

    @functools.cached_property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)

    def media_type(self, docker: bool = False) -> str:
        if self._media_type is not None:
            return self._media_type
        return (DOCKER_LAYER_TYPES if docker else OCI_LAYER_TYPES)[self.compression]

    def descriptor(self, docker: bool = False) -> dict[str, Any]:
        desc: dict[str, Any] = {
            "mediaType": self.media_type(docker),
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return desc

    def names(self) -> list[str]:
        """The member names of the tar, as stored."""
        with tarfile.open(fileobj=io.BytesIO(self.tar), mode="r:") as tf:
            return tf.getnames()


@dataclass
class ImageConfig:
    """The runtime part of an image config (the ``config`` object); ``None`` / empty = absent."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = field(default_factory=lambda: ["sh"])
    env: list[str] | None = field(default_factory=lambda: [DEFAULT_PATH])
    user: str | None = None
    working_dir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)  # "80/tcp"
    stop_signal: str | None = None
    volumes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # merged in last, e.g. {"Healthcheck": ...}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user is not None:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env is not None:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir is not None:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal is not None:
            out["StopSignal"] = self.stop_signal
        out.update(self.extra)
        return out


class _Pushable:
    """A manifest (or index) document: its bytes as pushed, and their digest."""

    @property
    def manifest_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @functools.cached_property
    def manifest_bytes(self) -> bytes:
        return canonical_json(self.manifest_json)

    @property
    def digest(self) -> str:
        """The manifest digest."""
        return sha256_digest(self.manifest_bytes)


class Image(_Pushable):
    """Layers + config: an OCI image manifest, or a Docker schema 2 one with ``docker=True``."""

    def __init__(
        self,
        layers: Sequence[Layer],
        config: ImageConfig | None = None,
        *,
        architecture: str = "amd64",
        os: str = "linux",
        variant: str | None = None,
        docker: bool = False,
        created: str = CREATED,
        annotations: Mapping[str, str] | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.layers = list(layers)
        self.config = config if config is not None else ImageConfig()
        self.architecture = architecture
        self.os = os
        self.variant = variant
        self.docker = docker
        self.created = created
        self.annotations = dict(annotations or {})
        self.extra_config = dict(extra_config or {})

    @property
    def platform(self) -> dict[str, str]:
        p = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            p["variant"] = self.variant
        return p

    @property
    def media_type(self) -> str:
        return DOCKER_MANIFEST if self.docker else OCI_MANIFEST

    @property
    def config_media_type(self) -> str:
        return DOCKER_CONFIG if self.docker else OCI_CONFIG

    @functools.cached_property
    def config_json(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"created": self.created, **self.platform}
        cfg["config"] = self.config.to_json()
        cfg["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]}
        cfg["history"] = [
            {"created": self.created, "created_by": f"crid tests: layer {i}"} for i in range(len(self.layers))
        ]
        cfg.update(self.extra_config)
        return cfg

    @functools.cached_property
    def config_bytes(self) -> bytes:
        return canonical_json(self.config_json)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)

    @functools.cached_property
    def manifest_json(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {
                "mediaType": self.config_media_type,
                "digest": self.config_digest,
                "size": len(self.config_bytes),
            },
            "layers": [layer.descriptor(self.docker) for layer in self.layers],
        }
        if self.annotations:
            manifest["annotations"] = dict(self.annotations)
        return manifest

    @property
    def image_id(self) -> str:
        """What CRI calls the image id: the config digest."""
        return self.config_digest

    def chain_ids(self) -> list[str]:
        """OCI chain ids of the layers, bottom first."""
        out: list[str] = []
        for layer in self.layers:
            out.append(layer.diff_id if not out else sha256_digest(f"{out[-1]} {layer.diff_id}".encode()))
        return out

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.manifest_bytes),
            "platform": self.platform,
        }

    def blobs(self) -> Iterator[tuple[str, bytes]]:
        """(digest, bytes) of the config and every layer."""
        yield self.config_digest, self.config_bytes
        for layer in self.layers:
            yield layer.digest, layer.blob


class Index(_Pushable):
    """An OCI image index, or a Docker manifest list with ``docker=True``.

    ``platforms`` and ``descriptor_annotations`` (by position) override the
    platform of a descriptor or annotate it (e.g. an attestation manifest).
    """

    def __init__(
        self,
        manifests: Sequence[Image],
        *,
        docker: bool = False,
        annotations: Mapping[str, str] | None = None,
        descriptor_annotations: Mapping[int, Mapping[str, str]] | None = None,
        platforms: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        self.manifests = list(manifests)
        self.docker = docker
        self.annotations = dict(annotations or {})
        self.descriptor_annotations = {i: dict(a) for i, a in (descriptor_annotations or {}).items()}
        self.platforms = {i: dict(p) for i, p in (platforms or {}).items()}

    @property
    def media_type(self) -> str:
        return DOCKER_LIST if self.docker else OCI_INDEX

    @functools.cached_property
    def manifest_json(self) -> dict[str, Any]:
        descs = []
        for i, image in enumerate(self.manifests):
            desc = image.descriptor()
            if i in self.platforms:
                desc["platform"] = self.platforms[i]
            if i in self.descriptor_annotations:
                desc["annotations"] = self.descriptor_annotations[i]
            descs.append(desc)
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type, "manifests": descs}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def image_for(self, architecture: str, os: str = "linux") -> Image:
        for image in self.manifests:
            if image.architecture == architecture and image.os == os:
                return image
        raise KeyError(f"{os}/{architecture}")


Target = Image | Index


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
    out.write(tar_header(_header(Dir(head))[0]))
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
        out.write(_pad(size))
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
    out.write(tar_header(_header(Dir(head))[0]))
    for i in range(count):
        if i % per_dir == 0:
            out.write(tar_header(_header(Dir(f"{head}/d{i // per_dir:04d}"))[0]))
        size = prng.randint(0, max_size)
        start = prng.randint(0, len(pool) - size)
        data = pool[start : start + size]
        info = tarfile.TarInfo(f"{head}/d{i // per_dir:04d}/f{i:06d}.txt")
        info.size, info.mode, info.mtime = size, 0o644, MTIME
        out.write(tar_header(info))
        out.write(data)
        out.write(_pad(size))
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
