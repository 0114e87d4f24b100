"""Apply one image layer (a tar stream) to an empty snapshot directory.

Runs in a process of its own per layer (cri/images/layer_child.py). The
layer is decompressed (gzip through isal, zstd, or none), its uncompressed
bytes are hashed and must equal the config's diff_id. Each snapshot holds
only its own layer's changes; overlayfs stacks them, so OCI whiteouts become
overlay whiteouts (a 0/0 character device) and opaque markers the
``trusted.overlay.opaque`` xattr.

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

The layer is read as a stream: the content store's file, or the download
itself as it arrives (cri/images/pull.py). tarfile parses the headers only;
a regular file's data goes from the decompressor to its file in large
blocks, hashed on the way, with no per-block Python in between.

Layers are unpacked in parallel, before the layers below them are on disk:
what reads the lower layers is then deferred (``lowers=None``). Implied
parent directories are made as if nothing were below, and their checks and
owner/mode from below are applied by ``Applied.finish`` once the lower layers
are committed, before the directories' own metadata: the tree is the one an
unpack on top of them makes. Where deferring could not give that same tree,
the unpack raises ``NeedsLowers`` and the caller unpacks the layer again on
top of its lowers: a hardlink to a file not in this layer (copied up from
below), a lower directory with the setgid bit (what is made in an implied
copy of it inherits its group), or any failure after an implied directory
(on top of its lowers the unpack may fail earlier, and differently).
"""

import errno
import logging
import os
import shutil
import stat
import tarfile
import threading
from dataclasses import dataclass
from typing import IO

from cri.errors import CridError, FailedPrecondition, ResourceExhausted
from cri.images.layer_stream import COPY_CHUNK, LayerReader, decompress_errors, decompressed
from cri.images.lowers import OPAQUE_XATTR, LowerView
from cri.images.stream import Cancelled
from cri.log import fields

log = logging.getLogger(__name__)

OPAQUE = ".wh..wh..opq"
WHITEOUT_PREFIX = ".wh."
WHITEOUT_META_PREFIX = ".wh..wh."
_XATTR_PAX = "SCHILY.xattr."
# an image may carry file capabilities and user xattrs; overlay/trusted ones
# would let a layer forge whiteouts or redirects, so they are dropped
_ALLOWED_XATTR_PREFIXES = ("security.", "user.")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

__all__ = ["OPAQUE_XATTR", "Applied", "Cancelled", "LayerStats", "NeedsLowers", "UnsafeLayer", "apply_layer", "extract"]


class UnsafeLayer(FailedPrecondition):
    """A layer entry that would escape its snapshot, or is otherwise refused."""


class NeedsLowers(Exception):
    """Unpacked without its lower layers, this layer could differ: unpack it on top of them."""


@dataclass
class LayerStats:
    diff_id: str
    bytes: int
    inodes: int


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


class _Applier:
    def __init__(self, target: str, lowers: list[str] | None, cancel: threading.Event | None) -> None:
        self.target = target
        self.deferred = lowers is None
        self.view = LowerView(lowers) if lowers is not None else None  # None: deferred
        self.cancel = cancel
        # directories whose metadata is set at the end (their entries would change their mtimes):
        # kept as components, opened again without following any link (a later entry may have
        # replaced one with a symlink)
        self.dirs: list[tuple[list[str], tarfile.TarInfo]] = []
        self.implied: list[tuple[list[str], str]] = []  # (parts, entry) of dirs made while deferred
        self.bytes = 0
        self.inodes = 0

    def __getstate__(self) -> dict[str, object]:
        """What ``finish`` needs, sent from the unpack's process to the daemon (cri/images/layer_child.py)."""
        return {**self.__dict__, "view": None, "cancel": None}

    def _like(self, view: LowerView, parts: list[str], entry: str) -> os.stat_result | None:
        """For a directory this layer implies: refuse it over a lower non-directory, and
        return the lower directory whose owner and mode it takes, if any."""
        rel = "/".join(parts)
        hit = view.entry(parts)
        if hit is not None and stat.S_ISLNK(hit[1].st_mode):
            log.info(
                "layer path through a lower layer's symlink: made a real directory, which hides the symlink",
                extra=fields(entry=entry, symlink=rel),
            )
        elif hit is not None and not stat.S_ISDIR(hit[1].st_mode):
            raise UnsafeLayer(f"layer entry {entry!r}: {rel!r} is not a directory in a lower layer")
        # owner and mode of the directory the lower layers show there, through their
        # symlinks (containerd resolves each implied parent in the parents so)
        return view.directory(parts)

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
            if self.view is None:
                os.mkdir(path, 0o755)
                self.implied.append((parts[: i + 1], entry))
            else:
                like = self._like(self.view, parts[: i + 1], entry)
                os.mkdir(path, 0o755)
                if like is not None:  # keep the lower dir's owner and mode on the implied copy
                    os.lchown(path, like.st_uid, like.st_gid)
                    os.chmod(path, stat.S_IMODE(like.st_mode))
            self.inodes += 1
        return path

    def finish(self, lowers: list[str]) -> None:
        """Deferred: what needed the lower layers, now that they are committed. A
        dir implied again after it went is checked again and gets the same owner; a
        dir the layer then made itself gets its own metadata below, after this."""
        view = LowerView(lowers)
        for parts, entry in self.implied:
            like = self._like(view, parts, entry)
            if like is None:
                continue
            if like.st_mode & stat.S_ISGID:  # made on top of it, its children would have inherited its group
                raise NeedsLowers(f"layer entry {entry!r}: an implied copy of a setgid directory")
            try:
                fd = self._open_dir(parts)
                if fd is None:
                    continue  # replaced later in the layer
                try:
                    os.fchown(fd, like.st_uid, like.st_gid)
                    os.fchmod(fd, stat.S_IMODE(like.st_mode))
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _entry_error(entry, exc) from None
        self._dir_meta()

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

    def _file(self, path: str, member: tarfile.TarInfo, tar: tarfile.TarFile, reader: LayerReader) -> None:
        fd = os.open(path, _FILE_FLAGS, 0o600)
        try:
            if member.sparse is None:
                reader.seek(member.offset_data)
                reader.copy(fd, member.size, self.cancel, member.name)
            else:  # GNU sparse: tarfile knows where the holes go
                with os.fdopen(os.dup(fd), "wb") as out:
                    src = tar.extractfile(member)
                    if src is not None:
                        shutil.copyfileobj(src, out, COPY_CHUNK)
        finally:
            os.close(fd)
        self.bytes += member.size

    def _hardlink(self, path: str, member: tarfile.TarInfo, entry: str) -> None:
        parts = _clean(member.linkname, entry)
        if not parts:
            raise UnsafeLayer(f"layer entry {entry!r} is a hardlink to the root")
        source = os.path.join(self._parent(parts[:-1], entry), parts[-1])
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            if self.view is None:
                raise NeedsLowers(f"layer entry {entry!r} links to a file of a lower layer") from None
            lower = self.view.entry(parts)
            if lower is None or not stat.S_ISREG(lower[1].st_mode):
                raise UnsafeLayer(f"layer entry {entry!r} links to {member.linkname!r}, which does not exist") from None
            shutil.copy2(lower[0], source, follow_symlinks=False)  # copy up, as overlayfs would
            st = os.lstat(source)
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayer(f"layer entry {entry!r} is a hardlink to the directory {member.linkname!r}")
        os.link(source, path, follow_symlinks=False)

    def apply(self, tar: tarfile.TarFile, reader: LayerReader) -> None:
        for member in tar:
            if self.cancel is not None and self.cancel.is_set():
                raise Cancelled()
            try:
                self._entry(member, tar, reader)
            except FailedPrecondition:
                raise
            except OSError as exc:
                raise _entry_error(member.name, exc) from None
            # the member's header and data (all read by now) must be real bytes, not the end's zeros
            if reader.end is not None and reader.tell() > reader.end:
                raise FailedPrecondition(f"layer entry {member.name!r} is cut short: the layer stream ends inside it")
        if self.view is not None:
            self._dir_meta()

    def _open_dir(self, parts: list[str]) -> int | None:
        """The snapshot's directory ``parts``, reached one component at a time
        with O_NOFOLLOW; None once the layer replaced it (by a symlink, a file,
        a whiteout), so nothing outside the snapshot is ever touched."""
        fd = os.open(self.target, _DIR_FLAGS)
        for comp in parts:
            try:
                nxt = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    return None
                raise
            os.close(fd)
            fd = nxt
        return fd

    def _dir_meta(self) -> None:
        """The layer's directories' owner, mode, xattrs and times, through
        no-follow directory fds, deepest last-made first (children no longer
        change their mtimes)."""
        for parts, member in reversed(self.dirs):
            try:
                fd = self._open_dir(parts)
                if fd is None:
                    continue
                try:
                    os.fchown(fd, member.uid, member.gid)
                    os.fchmod(fd, member.mode & 0o7777)  # after chown, which clears setuid bits
                    self._xattrs(fd, member)
                    os.utime(fd, (member.mtime, member.mtime))
                finally:
                    os.close(fd)
            except OSError as exc:
                raise _entry_error(member.name, exc) from None

    def _entry(self, member: tarfile.TarInfo, tar: tarfile.TarFile, reader: LayerReader) -> None:
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
            self._file(path, member, tar, reader)
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


@dataclass
class Applied:
    """A layer unpacked into its directory; deferred, it still needs ``finish``."""

    stats: LayerStats
    _applier: _Applier

    @property
    def deferred(self) -> bool:
        return self._applier.deferred

    def finish(self, lowers: list[str]) -> None:
        """Deferred: apply what needs the lower layers (committed now); may raise NeedsLowers."""
        self._applier.finish(lowers)


def extract(
    raw: IO[bytes],
    compression: str,
    target: str,
    lowers: list[str] | None,
    diff_id: str,
    cancel: threading.Event | None = None,
) -> Applied:
    """Unpack the layer stream ``raw`` into the empty directory ``target`` and check its diff_id.

    ``lowers`` are the directories of the layers below, top-most first: they
    are read (never written) to refuse paths through their symlinks. None
    defers that (see the module's doc), for a layer whose lowers are not
    committed yet."""
    applier = _Applier(target, lowers, cancel)
    try:
        with decompressed(raw, compression) as stream:
            reader = LayerReader(stream)
            try:
                with tarfile.open(fileobj=reader, mode="r:", errorlevel=2) as tar:  # type: ignore[call-overload]
                    applier.apply(tar, reader)
                reader.drain()
            except tarfile.TarError as exc:
                raise FailedPrecondition(f"layer {diff_id}: not a valid tar stream: {exc}") from None
            except decompress_errors() as exc:
                if isinstance(exc, OSError) and exc.filename:
                    raise
                raise FailedPrecondition(f"layer {diff_id}: cannot decompress: {exc}") from None
        got = "sha256:" + reader.hash.hexdigest()
        if got != diff_id:
            raise FailedPrecondition(f"layer {diff_id}: diff_id mismatch: the uncompressed layer hashes to {got}")
    except (Cancelled, NeedsLowers):
        raise
    except Exception as exc:
        if applier.view is None and applier.implied:
            raise NeedsLowers(f"layer {diff_id} failed after an implied directory: {exc}") from exc
        raise
    return Applied(LayerStats(diff_id=got, bytes=applier.bytes, inodes=applier.inodes), applier)


def apply_layer(
    blob: str,
    compression: str,
    target: str,
    lowers: list[str],
    diff_id: str,
    cancel: threading.Event | None = None,
) -> LayerStats:
    """Unpack the content store's file ``blob`` on top of ``lowers`` (see ``extract``)."""
    with open(blob, "rb") as raw:
        return extract(raw, compression, target, lowers, diff_id, cancel).stats
