"""The uncompressed bytes of a layer as the unpacker reads them (cri/images/unpack.py).

Forward only: the layer comes from the content store's file or from the
download itself as it arrives. Every real byte is hashed (the diff_id) and
a regular file's data goes from the decompressor to its file in large
blocks, with no per-block Python in between.
"""

import contextlib
import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from typing import IO

from cri.errors import FailedPrecondition
from cri.images.stream import Cancelled, write_all

COPY_CHUNK = 1024 * 1024


def decompress_errors() -> tuple[type[BaseException], ...]:
    """What a broken compressed stream raises. isal and zstandard are imported here, not at the
    module's import: only the pull's processes decompress, and they are 1.4 MiB of the daemon."""
    import zstandard
    from isal import igzip_lib

    # isal's stub declares IsalError as an instance; at run time it is a class
    return (OSError, EOFError, zstandard.ZstdError, igzip_lib.IsalError)  # type: ignore[return-value]


# padding of a last member plus the two zero blocks: what a stream may lack at its end
_END_OF_ARCHIVE = tarfile.BLOCKSIZE - 1 + 2 * tarfile.BLOCKSIZE


class LayerReader:
    """The uncompressed layer as tarfile reads it: forward only, every real
    byte hashed and counted as it goes by. At the end of the real bytes it
    serves up to one end-of-archive's worth of zeros (not hashed), so that
    tarfile accepts a stream without its end blocks; ``end`` then says where
    the real bytes stopped, for the check that no member used the zeros."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0  # real bytes
        self.pos = 0  # bytes served, the zeros included
        self.end: int | None = None
        self._zeros = _END_OF_ARCHIVE
        self._buf = memoryview(bytearray(COPY_CHUNK))

    def _fill(self, view: memoryview) -> int:
        """Real bytes into ``view``; 0 once they have ended."""
        if self.end is not None or not view:
            return 0
        n = self.raw.readinto(view)  # type: ignore[attr-defined]
        if not n:
            self.end = self.count
            return 0
        self.hash.update(view[:n])
        self.count += n
        self.pos += n
        return int(n)

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            chunks = []
            while chunk := self.read(COPY_CHUNK):
                chunks.append(chunk)
            return b"".join(chunks)
        out = bytearray(n)
        view, got = memoryview(out), 0
        while got < n and (k := self._fill(view[got:])):
            got += k
        if got < n:  # the real bytes have ended: zeros, then nothing
            give = min(n - got, self._zeros)
            self._zeros -= give
            self.pos += give
            got += give
        return bytes(out[:got])

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence != io.SEEK_SET or pos < self.pos:
            raise io.UnsupportedOperation("a layer stream is read forward only")
        while self.pos < pos and self.read(min(pos - self.pos, COPY_CHUNK)):
            pass
        return self.pos

    def copy(self, fd: int, size: int, cancel: threading.Event | None, entry: str) -> None:
        """``size`` bytes into ``fd``, in large blocks."""
        left = size
        while left:
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            n = self._fill(self._buf[: min(left, COPY_CHUNK)])
            if not n:
                raise FailedPrecondition(f"layer entry {entry!r} is cut short: the layer stream ends inside it")
            write_all(fd, self._buf[:n])
            left -= n

    def drain(self) -> None:
        while self._fill(self._buf):
            pass


@contextlib.contextmanager
def decompressed(raw: IO[bytes], compression: str) -> Iterator[IO[bytes]]:
    if compression == "gzip":
        from isal import igzip_threaded

        # one more thread: it inflates while this one hashes and writes the files
        with igzip_threaded.open(raw, "rb", threads=1) as f:  # type: ignore[no-untyped-call]
            yield f
    elif compression == "zstd":
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=False) as f:
            yield f
    elif compression == "none":
        yield raw
    else:
        raise FailedPrecondition(f"unknown layer compression {compression!r}")
