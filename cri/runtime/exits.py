"""Container exits, as they happen: inotify on conmon's exit directory.

conmon writes ``<exit_dir>/<container id>`` holding the exit code when the
container's process ends. An inotify watch on that one directory wakes crid
for each new file, so exits are recorded at once without polling every
container.
"""

import asyncio
import contextlib
import os
import struct
from collections.abc import Callable

from cri.host import HOST

IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_Q_OVERFLOW = 0x00004000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class ExitWatcher:
    def __init__(self, directory: str, on_exit: Callable[[str], None], on_overflow: Callable[[], None]) -> None:
        self.directory = directory
        self.on_exit = on_exit
        self.on_overflow = on_overflow  # events were lost: the caller must look at every container
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._fd = HOST.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        try:
            HOST.inotify_add_watch(self._fd, directory, IN_CLOSE_WRITE | IN_MOVED_TO)
        except OSError:
            os.close(self._fd)
            raise
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._fd, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return
        offset = 0
        while offset + _EVENT.size <= len(data):
            _, mask, _, length = _EVENT.unpack_from(data, offset)
            if mask & IN_Q_OVERFLOW:
                self.on_overflow()
            name = data[offset + _EVENT.size : offset + _EVENT.size + length].rstrip(b"\0").decode()
            offset += _EVENT.size + length
            if name and not name.startswith("."):
                self.on_exit(name)

    def exit_code(self, container_id: str) -> tuple[int, int] | None:
        """(exit code, time of exit in ns) from the exit file, None if there is none yet."""
        path = os.path.join(self.directory, container_id)
        try:
            with open(path) as f:
                text = f.read().strip()
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            return None
        try:
            return int(text), mtime
        except ValueError:
            return None  # still being written: the close event follows

    def forget(self, container_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.directory, container_id))

    def close(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
