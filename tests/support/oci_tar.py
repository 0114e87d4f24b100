"""Tar layers in code: files, dirs, links, whiteouts, devices and raw headers as entries, written
as a PAX tar (so xattrs such as ``security.capability`` survive) and compressed with gzip, zstd or
nothing. Deterministic: every entry has a fixed mtime by default. The images built of them are
:mod:`tests.support.oci_images`; the builder's whole API is :mod:`tests.support.oci_build`.
"""

import gzip
import io
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import zstandard
from isal import igzip

Compression = Literal["gzip", "zstd", "none"]
MTIME = 1_700_000_000  # every entry's default mtime: builds are reproducible


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


def entry_header(entry: Entry) -> tuple[tarfile.TarInfo, bytes]:
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


def tar_padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def build_tar(entries: Iterable[Entry]) -> bytes:
    """A PAX tar stream of ``entries`` in order; names are written as given,
    nothing is checked or reordered."""
    out = io.BytesIO()
    for entry in entries:
        info, data = entry_header(entry)
        if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE):
            info.size = len(data)
        else:
            data = b""
            info.size = 0
        out.write(tar_header(info))
        out.write(data)
        out.write(tar_padding(len(data)))
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
