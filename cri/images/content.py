"""The content store: verified blobs under ``content/blobs/sha256/<hex>``.

A blob is written to ``content/ingest/`` and hashed as it arrives; only
when its size and digest match the descriptor is it fsync'ed and renamed
into place, so a committed blob is always complete and correct. Ingest
files are discarded on startup: a partial download from a killed daemon is
never resumed or reused.
"""

import asyncio
import contextlib
import hashlib
import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import IO, cast

from cri.errors import FailedPrecondition
from cri.host import HOST
from cri.images.reference import SHA256_RE
from cri.images.stream import Pipe, PipeClosed, in_thread, write_all

# bytes of a download in flight between the event loop and its thread: a few of the registry's 1 MiB writes
PIPE_BYTES = 8 * 1024 * 1024
# an ingest file's pages are sent to the disk every this many bytes, not all at the final fsync:
# the disk then writes while the rest downloads, and the fsync at the end of a layer is short
WRITEBACK_BYTES = 8 * 1024 * 1024


class ContentStore:
    def __init__(self, root: str) -> None:
        self.store_root = root  # what ContentStore takes (a pull's processes open the same store)
        self.root = os.path.join(root, "content")
        self.blobs = os.path.join(self.root, "blobs", "sha256")
        self.ingest_dir = os.path.join(self.root, "ingest")
        os.makedirs(self.blobs, exist_ok=True)
        os.makedirs(self.ingest_dir, exist_ok=True)

    def path(self, digest: str) -> str:
        if not SHA256_RE.match(digest):
            raise FailedPrecondition(f"not a sha256 digest: {digest!r}")
        return os.path.join(self.blobs, digest.removeprefix("sha256:"))

    def exists(self, digest: str) -> bool:
        return os.path.exists(self.path(digest))

    def size(self, digest: str) -> int:
        return os.stat(self.path(digest)).st_size

    def read(self, digest: str) -> bytes:
        with open(self.path(digest), "rb") as f:
            return f.read()

    def digests(self) -> Iterator[str]:
        for name in os.listdir(self.blobs):
            yield f"sha256:{name}"

    def detach(self, digest: str) -> str | None:
        """Take a blob out of the store at once, by a rename (a pull starting meanwhile does not
        find it); returns where it went, for the caller to unlink off the event loop: unlinking a
        big file frees its extents (260 ms for a 300 MB image's three blobs, measured). The ingest
        dir is emptied at startup, so a crash in between leaves nothing behind."""
        moved = os.path.join(self.ingest_dir, f"deleted-{uuid.uuid4().hex}")
        try:
            os.rename(self.path(digest), moved)
        except FileNotFoundError:
            return None
        return moved

    def ingest_prefix(self, digest: str) -> str:
        """The start of the names of ``digest``'s ingest files (one download of a blob at a time)."""
        return digest.removeprefix("sha256:")[:12] + "-"

    def discard_ingest(self, digest: str) -> None:
        """What a download that died without cleaning up (a killed pull process) left of ``digest``."""
        for name in os.listdir(self.ingest_dir):
            if name.startswith(self.ingest_prefix(digest)):
                _unlink(os.path.join(self.ingest_dir, name))

    def clear_ingest(self) -> None:
        shutil.rmtree(self.ingest_dir, ignore_errors=True)
        os.makedirs(self.ingest_dir, exist_ok=True)

    def put_bytes(self, digest: str, data: bytes) -> None:
        """Commit a small blob already verified in memory (manifest, config)."""
        if self.exists(digest):
            return
        fd, tmp = tempfile.mkstemp(dir=self.ingest_dir)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, self.path(digest))
        except BaseException:
            _unlink(tmp)
            raise

    def writer(self, digest: str, size: int, consumer: "Callable[[IO[bytes]], None] | None" = None) -> "Ingest":
        """A download's sink (on the event loop); ``consumer`` reads the blob in the same pass."""
        return Ingest(self, digest, size, consumer)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def verify_bytes(data: bytes, digest: str, size: int | None, what: str) -> None:
    if size is not None and len(data) != size:
        raise FailedPrecondition(f"{what} {digest}: size mismatch: got {len(data)} bytes, expected {size}")
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise FailedPrecondition(f"{what} {digest}: digest mismatch: content hashes to {got}")


class _Tee(io.RawIOBase):
    """The blob as it arrives, to read in the ingest's thread: each chunk is
    written to the ingest file and hashed as it comes out of the pipe."""

    def __init__(self, pipe: Pipe, fd: int) -> None:
        self._pipe = pipe
        self._fd = fd
        self.hash = hashlib.sha256()
        self.count = 0
        self._synced = 0  # bytes whose write-out has been started
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def _next(self) -> bool:
        data = self._pipe.get()
        if not data:
            return False
        write_all(self._fd, memoryview(data))
        self.hash.update(data)
        self.count += len(data)
        self._pending = memoryview(data)
        if self.count - self._synced >= WRITEBACK_BYTES:  # best effort: the fsync at the end is what counts
            HOST.start_writeback(self._fd, self._synced, self.count - self._synced)
            self._synced = self.count
        return True

    def readinto(self, b: "memoryview | bytearray") -> int:  # type: ignore[override]
        if not self._pending and not self._next():
            return 0
        n = min(len(b), len(self._pending))
        b[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def drain(self) -> None:
        self._pending = memoryview(b"")
        while self._next():
            pass


class BlobSink:
    """Where a blob download goes (the content store's ingest)."""

    @property
    def offset(self) -> int:
        raise NotImplementedError

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def reset(self) -> None:
        raise NotImplementedError


class Ingest(BlobSink):
    """One blob being downloaded into an ingest file.

    The event loop only hands the bytes over (a bounded pipe); a thread of
    the blob's own writes and hashes them and, with a ``consumer`` (a
    layer's unpack), lets it read them in the same pass, then reads what the
    consumer left and checks size and digest before the blob is committed.
    The consumer reports its own outcome; whatever it does, the blob's
    verdict is the digest's."""

    def __init__(
        self, store: ContentStore, digest: str, size: int, consumer: Callable[[IO[bytes]], None] | None = None
    ) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        fd, self.tmp = tempfile.mkstemp(dir=store.ingest_dir, prefix=store.ingest_prefix(digest))
        self._pipe = Pipe(PIPE_BYTES)
        self._offset = 0  # where the next write lands in the blob (a resumed download's Range)
        self._fed = 0  # bytes given to the thread: a download started over does not give them again
        self._job = in_thread(lambda: self._run(fd, consumer), "crid-ingest")

    @property
    def offset(self) -> int:
        return self._offset

    async def write(self, data: bytes) -> None:
        end = self._offset + len(data)
        if end > self._fed:
            try:
                await self._pipe.put(data[self._fed - self._offset :] if self._fed > self._offset else data)
            except PipeClosed:
                await asyncio.shield(self._job)  # the thread failed: its error
                raise FailedPrecondition(f"blob {self.digest}: ingest ended early") from None
            self._fed = end
        self._offset = end

    async def reset(self) -> None:
        """The server ignored Range and sends the blob from its start: what the
        thread has had already is skipped (the digest checks all of it)."""
        self._offset = 0

    async def commit(self) -> None:
        """Wait for the verdict: the blob is in place, or the error names it (the
        ingest file is gone)."""
        self._pipe.close()
        await asyncio.shield(self._job)

    def discard(self) -> None:
        """Give up (the thread stops and removes its file); ``wait`` for it."""
        self._pipe.abort()
        _unlink(self.tmp)

    async def wait(self) -> None:
        await asyncio.wait({self._job})

    def _run(self, fd: int, consumer: Callable[[IO[bytes]], None] | None) -> None:
        tee = _Tee(self._pipe, fd)
        try:
            if consumer is not None:
                consumer(cast(IO[bytes], tee))
            tee.drain()
            if tee.count != self.size:
                raise FailedPrecondition(
                    f"blob {self.digest}: size mismatch: got {tee.count} bytes, expected {self.size}"
                )
            got = "sha256:" + tee.hash.hexdigest()
            if got != self.digest:
                raise FailedPrecondition(f"blob {self.digest}: digest mismatch: content hashes to {got}")
            os.fsync(fd)
            os.close(fd)
            fd = -1
            os.rename(self.tmp, self.store.path(self.digest))
        except BaseException:
            _unlink(self.tmp)
            raise
        finally:
            self._pipe.stop()
            if fd >= 0:
                os.close(fd)
