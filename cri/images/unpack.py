"""Apply one image layer (a tar stream) to an empty snapshot directory.

Runs in a worker thread. The layer is decompressed (gzip through isal, zstd,
or none), its uncompressed bytes are hashed and must equal the config's
diff_id. Each snapshot holds only its own layer's changes; overlayfs stacks
them, so OCI whiteouts become overlay whiteouts (a 0/0 character device) and
opaque markers the ``trusted.overlay.opaque`` xattr.

Safety: no entry may leave the snapshot. Names are cleaned (an absolute name
is taken relative to the root, as docker and containerd do); a ``..`` that
climbs above the root, a path through a symlink this layer made, or a
hardlink to a target outside the root fails the whole unpack naming the
entry. A path through a *lower* layer's symlink gets a real directory in this
layer instead (owner and mode of the directory the symlink points to), as
containerd's and moby's overlay appliers do: it hides the symlink in the
merged view and stays inside this layer's own directory. Files are created
with O_NOFOLLOW|O_EXCL, every directory on the way is checked with lstat,
and lower layers are only read component by component (never through one of
their symlinks), so nothing outside the snapshots is read, written or removed.

Streams that end right after a complete member, without the padding and the
two zero blocks of a proper end of archive (umoci writes such layers; GNU tar
and containerd accept them), are accepted; a member cut short is not.
"""

import contextlib
import errno
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import zstandard
from isal import igzip_lib, igzip_threaded

from cri.errors import CridError, FailedPrecondition, ResourceExhausted
from cri.log import fields

log = logging.getLogger(__name__)

OPAQUE = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
OPAQUE_XATTR = "trusted.overlay.opaque"
_XATTR_PAX = "SCHILY.xattr."
# an image may carry file capabilities and user xattrs; overlay/trusted ones
# would let a layer forge whiteouts or redirects, so they are dropped
_ALLOWED_XATTR_PREFIXES = ("security.", "user.")
_COPY_CHUNK = 1024 * 1024
# isal's stub declares IsalError as an instance; at run time it is a class
_DECOMPRESS_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    EOFError,
    zstandard.ZstdError,
    igzip_lib.IsalError,  # type: ignore[assignment]
)
# padding of a last member plus the two zero blocks: what a stream may lack at its end
_END_OF_ARCHIVE = tarfile.BLOCKSIZE - 1 + 2 * tarfile.BLOCKSIZE
_SYMLINK_DEPTH = 40  # as the kernel's limit on nested symlinks
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeLayer(FailedPrecondition):
    """A layer entry that would escape its snapshot, or is otherwise refused."""


class Cancelled(Exception):
    """The pull was cancelled while this layer was being applied."""


@dataclass
class LayerStats:
    diff_id: str
    bytes: int
    inodes: int


class _HashingReader:
    """Hashes and counts everything read through it. At the end of the real
    bytes it serves up to one end-of-archive's worth of zeros (not hashed), so
    that tarfile accepts a stream without its end blocks; ``end`` then says
    where the real bytes stopped, for the check that no member used the zeros."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0
        self.end: int | None = None
        self._zeros = _END_OF_ARCHIVE

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n) if self.end is None else b""
        if data:
            self.hash.update(data)
            self.count += len(data)
            return data
        if n == 0:
            return b""
        if self.end is None:
            self.end = self.count
        give = self._zeros if n < 0 else min(n, self._zeros)
        self._zeros -= give
        return bytes(give)

    def drain(self) -> None:
        while self.read(_COPY_CHUNK):
            pass


@contextlib.contextmanager
def _decompressed(path: str, compression: str) -> Iterator[IO[bytes]]:
    if compression == "gzip":
        with igzip_threaded.open(path, "rb", threads=1) as f:  # type: ignore[no-untyped-call]
            yield f
    elif compression == "zstd":
        with (
            open(path, "rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True) as f,
        ):
            yield f
    elif compression == "none":
        with open(path, "rb") as f:
            yield f
    else:
        raise FailedPrecondition(f"unknown layer compression {compression!r}")


def _clean(name: str, entry: str) -> list[str]:
    """Path components of a tar name inside the root; refuses climbing out."""
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                raise UnsafeLayer(f"layer entry {entry!r} climbs out of the root with '..'")
            parts.pop()
        else:
            parts.append(comp)
    return parts


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def _link_parts(parts: list[str], linkname: str) -> list[str]:
    """Where the symlink at ``parts`` points, as components from the root;
    ``..`` stops at the root, as inside a chroot."""
    out = [] if linkname.startswith("/") else list(parts[:-1])
    for comp in linkname.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if out:
                out.pop()
        else:
            out.append(comp)
    return out


class _Applier:
    def __init__(self, target: str, lowers: list[str], cancel: threading.Event | None) -> None:
        self.target = target
        self.lowers = lowers  # top-most first
        self.cancel = cancel
        # directories whose metadata is set at the end (their entries would change their mtimes):
        # kept as components, opened again without following any link (a later entry may have
        # replaced one with a symlink)
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []
        self.bytes = 0
        self.inodes = 0

    # --- lookups -----------------------------------------------------------

    def _lower(self, parts: list[str]) -> tuple[str, os.stat_result] | None:
        """The entry at ``parts`` in the merged view of the lower layers, as
        overlayfs shows it: (its path, its lstat), or None when absent, whited
        out, or below a component that is not a directory there (which this
        layer's own directory then hides). Each layer is walked one checked
        component at a time, so no host symlink is ever followed."""
        layers = self.lowers
        found: tuple[str, os.stat_result] | None = None
        for i in range(len(parts)):
            if found is not None and not stat.S_ISDIR(found[1].st_mode):
                return None
            rel = os.path.join(*parts[: i + 1])
            found, below = None, []
            for lower in layers:
                path = os.path.join(lower, rel)
                try:
                    st = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if _is_whiteout(st) or (found is not None and not stat.S_ISDIR(st.st_mode)):
                    break
                if found is None:
                    found = (path, st)
                if not stat.S_ISDIR(st.st_mode):
                    break
                below.append(lower)
                if _is_opaque(path):
                    break
            if found is None:
                return None
            layers = below
        return found

    def _lower_dir(self, parts: list[str], depth: int = 0) -> os.stat_result | None:
        """The directory at ``parts`` in the lower layers' view, following
        their symlinks inside the image; None if it is not a directory."""
        for i in range(len(parts)):
            hit = self._lower(parts[: i + 1])
            if hit is None:
                return None
            path, st = hit
            if stat.S_ISLNK(st.st_mode):
                if depth >= _SYMLINK_DEPTH:
                    return None
                target = _link_parts(parts[: i + 1], os.readlink(path))
                return self._lower_dir(target + parts[i + 1 :], depth + 1)
            if not stat.S_ISDIR(st.st_mode):
                return None
            if i == len(parts) - 1:
                return st
        return None

    def _parent(self, parts: list[str], entry: str) -> str:
        """Make sure the directories ``parts`` exist in the snapshot, refusing
        any that is a symlink here or a non-directory below; returns the path."""
        path = self.target
        for i, comp in enumerate(parts):
            path = os.path.join(path, comp)
            rel = "/".join(parts[: i + 1])
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is not None:
                if stat.S_ISDIR(st.st_mode):
                    continue
                if stat.S_ISLNK(st.st_mode):
                    raise UnsafeLayer(
                        f"layer entry {entry!r} goes through the symlink {rel!r} of its own layer "
                        "(refused for safety: the layer could aim it outside the root)"
                    )
                raise UnsafeLayer(f"layer entry {entry!r}: {rel!r} is not a directory")
            hit = self._lower(parts[: i + 1])
            if hit is not None and stat.S_ISLNK(hit[1].st_mode):
                log.info(
                    "layer path through a lower layer's symlink: made a real directory, which hides the symlink",
                    extra=fields(entry=entry, symlink=rel),
                )
            elif hit is not None and not stat.S_ISDIR(hit[1].st_mode):
                raise UnsafeLayer(f"layer entry {entry!r}: {rel!r} is not a directory in a lower layer")
            # owner and mode of the directory the lower layers show there, through their
            # symlinks (containerd resolves each implied parent in the parents so)
            like = self._lower_dir(parts[: i + 1])
            os.mkdir(path, 0o755)
            if like is not None:  # keep the lower dir's owner and mode on the implied copy
                os.lchown(path, like.st_uid, like.st_gid)
                os.chmod(path, stat.S_IMODE(like.st_mode))
            self.inodes += 1
        return path

    @staticmethod
    def _remove(path: str) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)

    # --- metadata ----------------------------------------------------------

    @staticmethod
    def _xattrs(path: str | int, member: tarfile.TarInfo) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX) :]
            if name.startswith(_ALLOWED_XATTR_PREFIXES):
                try:
                    value_bytes = value.encode("utf-8", "surrogateescape")
                    if isinstance(path, int):
                        os.setxattr(path, name, value_bytes)
                    else:
                        os.setxattr(path, name, value_bytes, follow_symlinks=False)
                except OSError as exc:
                    raise FailedPrecondition(
                        f"layer entry {member.name!r}: cannot set xattr {name}: {exc.strerror}"
                    ) from None

    def _meta(self, path: str, member: tarfile.TarInfo) -> None:
        os.lchown(path, member.uid, member.gid)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)  # after chown, which clears setuid bits
        self._xattrs(path, member)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    # --- entries -----------------------------------------------------------

    def _file(self, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        fd = os.open(path, _FILE_FLAGS, 0o600)
        with os.fdopen(fd, "wb") as out:
            src = tar.extractfile(member)
            if src is not None:
                shutil.copyfileobj(src, out, _COPY_CHUNK)
        self.bytes += member.size

    def _hardlink(self, path: str, member: tarfile.TarInfo, entry: str) -> None:
        parts = _clean(member.linkname, entry)
        if not parts:
            raise UnsafeLayer(f"layer entry {entry!r} is a hardlink to the root")
        source = os.path.join(self._parent(parts[:-1], entry), parts[-1])
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            lower = self._lower(parts)
            if lower is None or not stat.S_ISREG(lower[1].st_mode):
                raise UnsafeLayer(f"layer entry {entry!r} links to {member.linkname!r}, which does not exist") from None
            shutil.copy2(lower[0], source, follow_symlinks=False)  # copy up, as overlayfs would
            st = os.lstat(source)
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(f"layer entry {entry!r} is a hardlink to the directory {member.linkname!r}")
        os.link(source, path, follow_symlinks=False)

    def apply(self, tar: tarfile.TarFile, reader: _HashingReader) -> None:
        for member in tar:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled()
            try:
                self._entry(member, tar)
            except FailedPrecondition:
                raise
            except OSError as exc:
                raise _entry_error(member.name, exc) from None
            # the member's header and data (all read by now) must be real bytes, not the end's zeros
            if reader.end is not None and tar.fileobj is not None and tar.fileobj.tell() > reader.end:
                raise FailedPrecondition(f"layer entry {member.name!r} is cut short: the layer stream ends inside it")
        for parts, member in reversed(self.dirs):  # deepest last-made first: children no longer change mtimes
            self._dir_meta(parts, member)

    def _dir_meta(self, parts: list[str], member: tarfile.TarInfo) -> None:
        """A directory's owner, mode, xattrs and times, through a file descriptor
        reached one component at a time with O_NOFOLLOW: a directory the layer
        replaced later (by a symlink, a file, a whiteout) gets nothing, and
        nothing outside the snapshot is ever touched."""
        fd = os.open(self.target, _DIR_FLAGS)
        try:
            for comp in parts:
                try:
                    nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        return  # no longer a directory of this layer
                    raise
                os.close(fd)
                fd = nxt
            os.fchown(fd, member.uid, member.gid)
            os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears setuid bits
            self._xattrs(fd, member)
            os.utime(fd, (member.mtime, member.mtime))
        finally:
            os.close(fd)

    def _entry(self, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        entry = member.name
        parts = _clean(entry, entry)
        if not parts:
            if member.isdir():
                self.dirs.append(([], member))
            return
        base = parts[-1]
        if base == OPAQUE:
            d = self._parent(parts[:-1], entry)
            os.setxattr(d, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # aufs bookkeeping (.wh..wh.plnk and the like): nothing to apply
        if base.startswith(WHITEOUT_PREFIX):
            name = base[len(WHITEOUT_PREFIX) :]
            if name in ("", ".", ".."):
                raise UnsafeLayer(f"layer entry {entry!r} is a whiteout of {name!r}")
            parent = self._parent(parts[:-1], entry)
            path = os.path.join(parent, name)
            self._remove(path)
            os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            self.inodes += 1
            return
        parent = self._parent(parts[:-1], entry)
        path = os.path.join(parent, base)
        if member.isdir():
            try:
                st: os.stat_result | None = os.lstat(path)
            except FileNotFoundError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                self._remove(path)
                os.mkdir(path, 0o700)
                self.inodes += 1
            self.dirs.append((parts, member))
            return
        self._remove(path)
        if member.isreg():
            self._file(path, member, tar)
        elif member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            self._hardlink(path, member, entry)
            self.inodes += 1
            return  # a hardlink shares its target's metadata
        elif member.ischr() or member.isblk() or member.isfifo():
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK if member.isblk() else stat.S_IFIFO
            os.mknod(path, kind | 0o600, os.makedev(member.devmajor, member.devminor))
        else:
            raise UnsafeLayer(f"layer entry {entry!r} has an unsupported type {member.type!r}")
        self.inodes += 1
        self._meta(path, member)


def _entry_error(entry: str, exc: OSError) -> CridError:
    """A system call refused an entry: a full disk is a resource limit, anything
    else (a name past NAME_MAX or PATH_MAX, a link where a directory must be)
    a layer crid cannot apply. Either way the message names the entry."""
    what = f"layer entry {entry[:200]!r}: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"{what}: no space left for the image")
    return FailedPrecondition(f"{what} (the layer cannot be applied)")


def apply_layer(
    blob: str,
    compression: str,
    target: str,
    lowers: list[str],
    diff_id: str,
    cancel: threading.Event | None = None,
) -> LayerStats:
    """Unpack ``blob`` into the empty directory ``target`` and check its diff_id.

    ``lowers`` are the directories of the layers below, top-most first: they
    are read (never written) to refuse paths through their symlinks."""
    with _decompressed(blob, compression) as stream:
        reader = _HashingReader(stream)
        applier = _Applier(target, lowers, cancel)
        try:
            with tarfile.open(fileobj=reader, mode="r|", errorlevel=2) as tar:  # type: ignore[call-overload]
                applier.apply(tar, reader)
            reader.drain()
        except tarfile.TarError as exc:
            raise FailedPrecondition(f"layer {diff_id}: not a valid tar stream: {exc}") from None
        except _DECOMPRESS_ERRORS as exc:
            if isinstance(exc, OSError) and exc.filename:
                raise
            raise FailedPrecondition(f"layer {diff_id}: cannot decompress: {exc}") from None
    got = "sha256:" + reader.hash.hexdigest()
    if got != diff_id:
        raise FailedPrecondition(f"layer {diff_id}: diff_id mismatch: the uncompressed layer hashes to {got}")
    return LayerStats(diff_id=got, bytes=applier.bytes, inodes=applier.inodes)
