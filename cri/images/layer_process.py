"""A layer's pass in a child process, as the daemon drives it.

The children (cri/images/layer_child.py) are forked by a zygote, started at
the first pull and stopped once no pull has needed it for
``ZYGOTE_IDLE_SECONDS``. A child downloads the blob into the content store
and unpacks the layer in the same pass, or unpacks it from the content
store; the event loop only reads its few messages: download progress,
"downloaded", and the outcome at the end.
"""

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import sys
from collections.abc import Callable

import cri
from cri.errors import FailedPrecondition, Unavailable
from cri.images.layer_child import (
    FRAME,
    LOG_FORMAT_ENV,
    LOG_LEVEL_ENV,
    PARENT_ENV,
    PID,
    SOCKET_ENV,
    STOP_SIGNAL,
    Job,
    Outcome,
)
from cri.images.unpack import Applied
from cri.log import fields

log = logging.getLogger(__name__)

ZYGOTE = "from cri.images.layer_child import serve; serve()"
ZYGOTE_IDLE_SECONDS = 60.0  # kubelet pulls one image after the other: the next one finds it still there
TERMINATE_SECONDS = 10.0  # a child given up that has not cleaned up by then is killed
_SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(cri.__file__)))  # where the zygote finds cri


class Zygote:
    """The process that forks the children; ``spawn`` starts it when it is not running."""

    def __init__(self, log_level: str, log_format: str) -> None:
        self._env = {LOG_LEVEL_ENV: log_level, LOG_FORMAT_ENV: log_format}
        self._proc: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._lock = asyncio.Lock()
        self._children = 0
        self._idle: asyncio.TimerHandle | None = None
        self._warming: asyncio.Future[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None

    async def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {
            **os.environ,
            **self._env,
            PARENT_ENV: str(os.getpid()),
            SOCKET_ENV: str(theirs.fileno()),
            "PYTHONPATH": os.pathsep.join(p for p in (_SOURCE_ROOT, os.environ.get("PYTHONPATH")) if p),
        }
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", ZYGOTE, stdin=asyncio.subprocess.DEVNULL, pass_fds=[theirs.fileno()], env=env
            )
        finally:
            theirs.close()
        ours.setblocking(False)
        proc = self._proc
        try:
            ready = await asyncio.get_running_loop().sock_recv(ours, 16)
        except BaseException:  # cancelled (the daemon stops) while it imports
            ours.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        if ready != b"ready":
            ours.close()
            await proc.wait()
            raise Unavailable(f"the pull's process server exited at its start (status {proc.returncode})")
        self._sock = ours
        self._arm_idle()  # a pull that warmed it may find every layer on disk already
        log.debug("layer zygote started", extra=fields(pid=self._proc.pid))
        return ours

    def warm(self) -> None:
        """Start the zygote in the background, while a pull resolves its image (0.25 s saved)."""
        if self._sock is None and (self._warming is None or self._warming.done()):
            self._warming = asyncio.ensure_future(self._warm())

    async def _warm(self) -> None:
        async with self._lock:
            if self._sock is None:
                try:
                    await self._start()
                except Exception as exc:  # the first job's spawn tries again and reports it
                    log.debug("layer zygote did not start", extra=fields(error=str(exc)))

    async def spawn(self, job: Job) -> tuple[int, int]:
        """Fork a child on ``job``: its pid and the read end of its messages' pipe. A zygote
        found dead (killed, say) is replaced once."""
        async with self._lock:
            if self._idle is not None:
                self._idle.cancel()
                self._idle = None
            for _ in range(2):
                sock = self._sock if self._sock is not None else await self._start()
                got = await self._fork(sock, job)
                if got is not None:
                    self._children += 1
                    return got
                await self.stop()
            raise Unavailable("the pull's process server exits as soon as it is asked for work")

    @staticmethod
    async def _fork(sock: socket.socket, job: Job) -> tuple[int, int] | None:
        read, write = os.pipe()
        try:
            try:
                socket.send_fds(sock, [pickle.dumps(job)], [write])
                reply = await asyncio.get_running_loop().sock_recv(sock, PID.size)
            except OSError:
                reply = b""
            finally:
                os.close(write)
        except BaseException:
            os.close(read)
            raise
        if len(reply) != PID.size:  # the zygote has gone
            os.close(read)
            return None
        return PID.unpack(reply)[0], read

    def release(self) -> None:
        """A child has ended; the last one starts the idle timer."""
        self._children -= 1
        self._arm_idle()

    def _arm_idle(self) -> None:
        if self._children == 0 and self._sock is not None and self._idle is None:
            loop = asyncio.get_running_loop()
            self._idle = loop.call_later(ZYGOTE_IDLE_SECONDS, lambda: asyncio.ensure_future(self._expire()))

    async def _expire(self) -> None:
        self._idle = None
        async with self._lock:  # a spawn under way counts its child first
            if self._children == 0:
                await self.stop()

    async def stop(self) -> None:
        """Close the daemon's end: the zygote exits, and any child still running dies with it. A
        zygote still starting (warmed for a pull that has failed since, say) is killed."""
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        elif self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        if self._proc is not None:
            await self._proc.wait()


class LayerProcess:
    """A child at work; ``outcome`` follows it to its end (or ``terminate`` it)."""

    def __init__(self, zygote: Zygote, pid: int, pidfd: int, reader: asyncio.StreamReader, what: str) -> None:
        self._zygote = zygote
        self._pid = pid
        self._pidfd = pidfd  # signals go to this process even if its pid is reused meanwhile
        self._reader = reader
        self._what = what
        self._ready = False  # it takes STOP_SIGNAL (before, the signal would kill it)
        self._stop_asked = False
        self._ended = False

    @classmethod
    async def start(cls, zygote: Zygote, job: Job, what: str) -> "LayerProcess":
        """A child on ``job``; ``what`` names it in errors. Cancelled, it still completes
        its exchange with the zygote (the next job's answer must not be this one's),
        then gives the child up."""
        starting = asyncio.ensure_future(cls._start(zygote, job, what))
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await (await starting).terminate()
            raise

    @classmethod
    async def _start(cls, zygote: Zygote, job: Job, what: str) -> "LayerProcess":
        pid, fd = await zygote.spawn(job)
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:  # it ended already: its pipe tells how
            pidfd = -1
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(fd, "rb", buffering=0))
        return cls(zygote, pid, pidfd, reader, what)

    async def outcome(
        self, progress: Callable[[int], None] = lambda n: None, downloaded: Callable[[], None] = lambda: None
    ) -> Outcome:
        """The blob's verdict and the unpack's outcome, once the child has sent them."""
        while True:
            try:
                head = await self._reader.readexactly(FRAME.size)
                msg = pickle.loads(await self._reader.readexactly(FRAME.unpack(head)[0]))  # our own child's
            except asyncio.IncompleteReadError:
                self._end()
                raise FailedPrecondition(f"{self._what}: its pull process ended without an answer") from None
            if msg[0] == "ready":
                self._ready = True
                if self._stop_asked:
                    self.stop_unpack()
            elif msg[0] == "got":
                progress(msg[1])
            elif msg[0] == "downloaded":
                downloaded()
            elif msg[0] == "done":
                await self.wait()
                return msg[1], msg[2]

    def stop_unpack(self) -> None:
        """The unpack is given up; the download goes on (another pull may share it)."""
        self._stop_asked = True
        if self._ready:
            self._signal(STOP_SIGNAL)

    async def terminate(self) -> None:
        """Give it all up: the child removes its ingest file and exits (killed if it does not)."""
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.wait(), TERMINATE_SECONDS)
        except TimeoutError:
            self._signal(signal.SIGKILL)
            await self.wait()

    async def wait(self) -> None:
        """Until the child has closed its pipe: it writes nothing more."""
        while not self._ended and await self._reader.read(FRAME.size + 65536):
            pass
        self._end()

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._zygote.release()
            if self._pidfd >= 0:
                os.close(self._pidfd)
                self._pidfd = -1

    def _signal(self, sig: int) -> None:
        if self._pidfd >= 0:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self._pidfd, sig)


def as_applied(outcome: object) -> Applied:
    """The unpack's outcome, as the caller of ``unpack.extract`` would have seen it."""
    if isinstance(outcome, BaseException):
        raise outcome
    if not isinstance(outcome, Applied):
        raise FailedPrecondition("the layer was not unpacked")
    return outcome
