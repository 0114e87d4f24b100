"""A layer's pass in a process of its own, forked by a zygote (cri/images/layer_process.py drives both).

A pull's heavy work runs here, not in the daemon: the download of the blob
(the registry client, with its auth, mirrors, retries and Range resumes),
its writing, hashing and digest check into the content store
(content.Ingest), and the layer's unpack in the same pass (unpack.extract).
In the daemon, the download alone kept the event loop that answers kubelet
about 90 % busy moving bytes (ListImages waited tens of milliseconds during
a big pull), and the unpacks shared its GIL. The daemon decides what to
fetch and unpack, shares the work between pulls, and commits snapshots in
chain order.

The zygote (``serve``) imports isal, zstandard and the rest once (0.3 s of CPU
a process would pay at each start) and forks a child per job. A child's
messages go to the pipe it was given, as pickled frames (4-byte length,
then the pickle): ``("ready",)`` once it takes signals, ``("got", n)`` as
the download goes, ``("downloaded",)`` once it is complete, and last
``("done", blob_error, unpack_outcome)``, where the outcome is
``unpack.Applied`` (whose deferred part the daemon finishes) or the
exception. Its log lines go to the daemon's stderr, in the daemon's format.
SIGUSR1 gives the unpack up (the blob goes on: another pull may share it);
SIGTERM gives everything up, removing the ingest file. These processes run
the daemon's own code: the pickles cross no trust boundary.
"""

import asyncio
import os
import pickle
import signal
import socket
import struct
import threading
from dataclasses import dataclass
from typing import IO, Any

from cri.host import HOST
from cri.images.auth import Credentials
from cri.images.hosts import RegistryHost
from cri.log import setup

LOG_LEVEL_ENV = "CRID_LAYER_LOG_LEVEL"
LOG_FORMAT_ENV = "CRID_LAYER_LOG_FORMAT"
PARENT_ENV = "CRID_LAYER_PARENT"  # the daemon's pid: the zygote dies with it
SOCKET_ENV = "CRID_LAYER_SOCKET"  # the fd of the zygote's end of its socket with the daemon
# a pull yields the CPU to the daemon's own thread: with 3 layers' passes on 2 cores, ListImages during a
# 300 MB pull took p95 20 ms at nice 0 and 12 ms at 10 (the machine's floor, with an idle daemon, 11 ms)
PULL_NICE = 10
JOB_BYTES = 1024 * 1024  # the most a pickled job may take (a few KiB)
PID = struct.Struct("!i")
STOP_SIGNAL = signal.SIGUSR1
FRAME = struct.Struct("!I")
PROGRESS_BYTES = 1024 * 1024  # downloaded bytes are reported in steps of about this many


@dataclass(frozen=True)
class Download:
    registry: str
    path: str
    hosts: list[RegistryHost]
    credentials: Credentials
    auth: dict[str, str]  # netloc -> the Authorization header that worked for the daemon
    read_timeout: float


@dataclass(frozen=True)
class Unpack:
    target: str
    lowers: list[str] | None  # None: deferred (see cri/images/unpack.py)
    diff_id: str


@dataclass(frozen=True)
class Job:
    store: str  # the image store's root, as ContentStore takes it
    digest: str
    size: int
    compression: str
    download: Download | None  # None: the blob is in the content store already
    unpack: Unpack | None


Outcome = tuple[BaseException | None, Any]  # the blob's verdict; Applied, the unpack's exception, or None


class _Child:
    def __init__(self, job: Job, out: IO[bytes]) -> None:
        self.job = job
        self.out = out
        self.stop = threading.Event()  # the unpack is given up
        self._lock = threading.Lock()
        self._unreported = 0
        self._task: asyncio.Task[Outcome] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def send(self, *msg: object) -> None:
        data = pickle.dumps(msg)
        with self._lock:
            self.out.write(FRAME.pack(len(data)) + data)
            self.out.flush()

    def got(self, n: int) -> None:
        self._unreported += n
        if self._unreported >= PROGRESS_BYTES:
            self.send("got", self._unreported)
            self._unreported = 0

    def unpack(self, raw: IO[bytes]) -> Any:
        from cri.images.unpack import extract

        spec = self.job.unpack
        assert spec is not None
        try:
            return extract(raw, self.job.compression, spec.target, spec.lowers, spec.diff_id, self.stop)
        except Exception as exc:
            return exc

    def terminate(self) -> None:
        self.stop.set()
        if self._loop is not None and self._task is not None:
            self._loop.call_soon_threadsafe(self._task.cancel)

    async def download(self) -> Outcome:
        from cri.images.auth import TokenCache
        from cri.images.content import ContentStore
        from cri.images.registry import Repository, new_session

        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        job, dl = self.job, self.job.download
        assert dl is not None
        unpacked: list[Any] = []
        consumer = (lambda raw: unpacked.append(self.unpack(raw))) if job.unpack is not None else None
        try:
            ingest = ContentStore(job.store).writer(job.digest, job.size, consumer)
        except Exception as exc:  # no ingest file (the disk is full, say): that is the blob's verdict
            return exc, None
        try:
            async with new_session(dl.read_timeout) as session:
                repo = Repository(session, dl.hosts, dl.registry, dl.path, dl.credentials, TokenCache())
                repo.trust(dl.auth)
                await repo.blob(job.digest, job.size, ingest, self.got)
            self.send("got", self._unreported)
            self.send("downloaded")
            await ingest.commit()
        except BaseException as exc:
            ingest.discard()
            await ingest.wait()  # its thread has stopped and removed its file
            if isinstance(exc, asyncio.CancelledError):
                raise
            return exc, unpacked[0] if unpacked else None
        return None, unpacked[0] if unpacked else None

    def from_file(self) -> Outcome:
        from cri.images.content import ContentStore

        try:
            raw = open(ContentStore(self.job.store).path(self.job.digest), "rb")  # noqa: SIM115
        except OSError as exc:  # the unpack's outcome, as extract's caller would have seen it
            return None, exc
        with raw:
            return None, self.unpack(raw)

    def run(self) -> Outcome | None:
        if self.job.download is None:
            return self.from_file()
        try:
            return asyncio.run(self.download())
        except asyncio.CancelledError:
            return None  # given up: nobody reads an outcome


def _child(job: Job, fd: int) -> None:
    """A forked child: one layer's pass, its messages on ``fd``."""
    HOST.die_with_parent(os.getppid())  # the zygote's: it dies with the daemon
    child = _Child(job, os.fdopen(fd, "wb"))
    # SIGTERM first: until it is taken, its default action (death) leaves nothing behind
    signal.signal(signal.SIGTERM, lambda *_: child.terminate())
    signal.signal(STOP_SIGNAL, lambda *_: child.stop.set())
    child.send("ready")  # the daemon sends STOP_SIGNAL only after this
    outcome = child.run()
    if outcome is None:
        return
    try:
        child.send("done", *outcome)
    except Exception:  # an exception that does not pickle: its message does
        from cri.errors import FailedPrecondition

        child.send("done", *(FailedPrecondition(str(x)) if isinstance(x, BaseException) else x for x in outcome))


def serve() -> None:
    """The zygote: imports what a layer's pass needs once, then forks a child per job.

    A job comes on the socket ``SOCKET_ENV`` names (a SOCK_SEQPACKET pair with
    the daemon): the pickled ``Job`` and, as SCM_RIGHTS, the write end of the
    pipe its messages go to; the answer is the child's pid. Forking here is
    safe where forking the daemon is not: this process has no threads. It
    exits when the daemon closes its end, and dies with the daemon."""
    HOST.die_with_parent(int(os.environ[PARENT_ENV]))
    os.nice(PULL_NICE)
    setup(os.environ.get(LOG_LEVEL_ENV, "info"), os.environ.get(LOG_FORMAT_ENV, "logfmt"))  # type: ignore[arg-type]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the children; EOF on their pipe is their end
    import zstandard
    from isal import igzip_threaded

    import cri.images.content
    import cri.images.registry
    import cri.images.unpack  # noqa: F401  (what every child needs, imported once)

    del igzip_threaded, zstandard

    sock = socket.socket(fileno=int(os.environ[SOCKET_ENV]))
    sock.sendall(b"ready")
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, JOB_BYTES, 1)
        except OSError:
            return
        if not data:
            return  # the daemon is done with this zygote
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sock.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _child(pickle.loads(data), fds[0])  # from the daemon itself (see the module's doc)
                code = 0
            finally:
                os._exit(code)
        for fd in fds:
            os.close(fd)
        sock.sendall(PID.pack(pid))
