"""Exclusive ownership of crid's root directory and of its socket.

Two locks (flock on lock files, released by the kernel when the process
dies, so a crashed daemon never blocks the next one): one in the root dir,
one next to the socket. A socket file nobody holds the lock for is stale and
is replaced, unless something still accepts connections on it.
"""

import contextlib
import errno
import fcntl
import os
import socket


class StartupError(Exception):
    """crid cannot start; the message says why, for the operator."""


class LockFile:
    """An flock'ed file holding the owner's pid."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def owner(self) -> str:
        try:
            with open(self.path) as f:
                return f.read().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def make_dir(path: str, mode: int) -> None:
    """Create ``path`` (and parents) and set its mode, even if it existed."""
    os.makedirs(path, mode=mode, exist_ok=True)
    os.chmod(path, mode)


def _accepts_connections(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(path)
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                return False
            raise
        return True


class Ownership:
    """Holds the root lock and the socket lock for the daemon's lifetime."""

    def __init__(self, root_dir: str, socket_path: str) -> None:
        self.root_dir = root_dir
        self.socket_path = socket_path
        self._root_lock = LockFile(os.path.join(root_dir, "crid.lock"))
        self._socket_lock = LockFile(socket_path + ".lock")

    def claim(self) -> None:
        make_dir(os.path.dirname(self.socket_path), 0o711)
        if not self._socket_lock.acquire():
            raise StartupError(
                f"another crid (pid {self._socket_lock.owner()}) is serving {self.socket_path}; "
                "not replacing its socket"
            )
        if not self._root_lock.acquire():
            self._socket_lock.release()
            raise StartupError(
                f"another crid (pid {self._root_lock.owner()}) is using the root directory {self.root_dir}"
            )
        if os.path.lexists(self.socket_path):
            if _accepts_connections(self.socket_path):
                self.release()
                raise StartupError(f"{self.socket_path} is in use by another live process; not replacing it")
            os.unlink(self.socket_path)  # stale: left by a daemon that died

    def release(self, remove_socket: bool = False) -> None:
        if remove_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
        self._root_lock.release()
        self._socket_lock.release()
