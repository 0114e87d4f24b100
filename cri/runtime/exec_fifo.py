"""StartContainer without ``runc start``: crid opens runc's exec fifo itself.

``runc create`` leaves the container's init (``runc init``) blocked in opening
``<runc root>/<id>/exec.fifo`` for writing; ``runc start`` is a Go process that
loads the container's state, opens that fifo for reading, reads the byte init
writes, and removes it (runc then reports the container as running). Init execs
the container's process as soon as its write is done. That process costs 6.5 ms
of a container's start here (a `runc start` p50 6.8 ms against 0.26 ms for
the open and read, by hand), and 4-5 ms of CPU, on every container start of a node.

Only for runc 1.x (``Handlers`` probes its version) and a container without
poststart hooks: runc >= 1.2 runs those in ``runc start``. Anything else (crun,
whose start writes the fifo instead, or a container this daemon did not create)
goes through ``<runtime> start``, as does a container whose fifo is not there.
"""

import asyncio
import contextlib
import os
import stat

from cri.errors import FailedPrecondition

FIFO = "exec.fifo"
TIMEOUT = 60.0  # as long as a runtime command may take


async def start(state_dir: str, pid: int, time_limit: float = TIMEOUT) -> bool:
    """Start the created container whose runc state is ``state_dir`` and whose init is ``pid``.
    False: there is no exec fifo there (start it through the runtime). Raises FailedPrecondition
    when init exits without starting the process, or does not write within ``time_limit``."""
    path = os.path.join(state_dir, FIFO)
    try:
        # non-blocking: the open does not wait for init, and a dead init cannot hang it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    try:
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        # gone before init writes, as `runc start` leaves it: init opens it through its own fd
        os.unlink(path)
        data = await _first_write(fd, pid, time_limit)
    finally:
        os.close(fd)
    if not data:
        raise FailedPrecondition("the container's process exited before it could be started")
    return True


async def _first_write(fd: int, pid: int, time_limit: float) -> bytes:
    """What init writes to the fifo; b"" when it exited without writing."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not done.done():
            done.set_result(None)

    try:
        pidfd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        pidfd = -1  # already gone: what it wrote before it went is still in the fifo
    try:
        # readable once init has written (or, after a writer came and went, at EOF)
        loop.add_reader(fd, wake)
        if pidfd >= 0:
            loop.add_reader(pidfd, wake)  # init exited: read what is there, do not wait
        else:
            wake()
        try:
            await asyncio.wait_for(done, time_limit)
        except TimeoutError:
            raise FailedPrecondition(f"the container's init did not start it within {time_limit:g}s") from None
        finally:
            loop.remove_reader(fd)
            if pidfd >= 0:
                loop.remove_reader(pidfd)
        with contextlib.suppress(BlockingIOError):
            return os.read(fd, 64)
        return b""
    finally:
        if pidfd >= 0:
            os.close(pidfd)
