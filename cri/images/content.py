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
import os
import shutil
import tempfile
from collections.abc import Iterator

from cri.errors import FailedPrecondition
from cri.images.reference import SHA256_RE


class ContentStore:
    def __init__(self, root: str) -> None:
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

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(digest))

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

    def writer(self, digest: str, size: int) -> "Ingest":
        return Ingest(self, digest, size)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def verify_bytes(data: bytes, digest: str, size: int | None, what: str) -> None:
    if size is not None and len(data) != size:
        raise FailedPrecondition(f"{what} {digest}: size mismatch: got {len(data)} bytes, expected {size}")
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise FailedPrecondition(f"{what} {digest}: digest mismatch: content hashes to {got}")


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
    """One blob being downloaded: an ingest file, hashed on the fly.

    Writes and hashing run in a worker thread so that the event loop stays free.
    """

    def __init__(self, store: ContentStore, digest: str, size: int) -> None:
        self.store = store
        self.digest = digest
        self.size = size
        fd, self.tmp = tempfile.mkstemp(dir=store.ingest_dir, prefix=digest.removeprefix("sha256:")[:12] + "-")
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._offset = 0

    @property
    def offset(self) -> int:
        return self._offset

    def _write(self, data: bytes) -> None:
        self._file.write(data)
        self._hash.update(data)

    async def write(self, data: bytes) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, data)
        self._offset += len(data)

    async def reset(self) -> None:
        self._file.seek(0)
        self._file.truncate()
        self._hash = hashlib.sha256()
        self._offset = 0

    def _commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.rename(self.tmp, self.store.path(self.digest))

    async def commit(self) -> None:
        """Verify size and digest, then move the blob into place; on a mismatch
        the ingest file is discarded and the error names the blob."""
        try:
            if self._offset != self.size:
                raise FailedPrecondition(
                    f"blob {self.digest}: size mismatch: got {self._offset} bytes, expected {self.size}"
                )
            got = "sha256:" + self._hash.hexdigest()
            if got != self.digest:
                raise FailedPrecondition(f"blob {self.digest}: digest mismatch: content hashes to {got}")
            await asyncio.get_running_loop().run_in_executor(None, self._commit)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        _unlink(self.tmp)
