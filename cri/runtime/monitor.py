"""conmon: the small per-container monitor (Debian's ``conmon`` package).

conmon runs ``<runtime> create`` for the container, holds its stdio, writes
the CRI-format log, records the exit code in the exit directory, and
daemonizes: it is never crid's child, so containers outlive crid. It reports
the container's pid (or the runtime's error) as JSON on the sync pipe whose
fd it finds in ``_OCI_SYNCPIPE``.
"""

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass

from cri.errors import FailedPrecondition
from cri.runtime.oci import OciRuntime

CONMON = "/usr/bin/conmon"
SYNC_TIMEOUT = 60.0
# conmon's control fifo: "<type> <height> <width>\n"; type 1 resizes the tty, type 2 reopens the log file
_REOPEN_LOG = "2 0 0\n"


@dataclass(frozen=True)
class MonitorSpec:
    container_id: str
    bundle: str
    log_path: str  # "" = no log
    exit_dir: str
    persist_dir: str
    socket_dir: str
    tty: bool = False
    stdin: bool = False
    stdin_once: bool = False


async def _read_sync(fd: int, seconds: float) -> dict[str, object]:
    """The first JSON line conmon writes on the sync pipe."""
    loop = asyncio.get_running_loop()
    buf = bytearray()
    done: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        buf.extend(chunk)
        if not chunk or b"\n" in chunk:
            loop.remove_reader(fd)
            if not done.done():
                done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done, seconds)
    finally:
        loop.remove_reader(fd)
    line = bytes(buf).split(b"\n", 1)[0]
    if not line:
        raise FailedPrecondition("conmon exited without reporting the container's pid")
    doc = json.loads(line)
    if not isinstance(doc, dict):
        raise FailedPrecondition(f"conmon sent {line!r}")
    return doc


def conmon_args(runtime_binary: str, runtime_root: str, spec: MonitorSpec) -> list[str]:
    """conmon's command line for ``spec``: it runs ``<runtime_binary> --root=<runtime_root> create``
    (the benchmarks' monitor floor runs the same)."""
    args = [
        CONMON,
        "--api-version", "1",
        "-c", spec.container_id,
        "-u", spec.container_id,
        "-n", spec.container_id,
        "-r", runtime_binary,
        "-b", spec.bundle,
        "-p", os.path.join(spec.bundle, "pidfile"),
        "-P", os.path.join(spec.bundle, "conmon.pid"),
        "-l", f"k8s-file:{spec.log_path or os.devnull}",
        "--exit-dir", spec.exit_dir,
        "--persist-dir", spec.persist_dir,
        "--socket-dir-path", spec.socket_dir,
        "--runtime-arg", f"--root={runtime_root}",
        "--log-level", "error",
        "--syslog",
    ]  # fmt: skip
    if spec.tty:
        args.append("-t")
    if spec.stdin:
        args.append("-i")
        if not spec.stdin_once:
            args.append("--leave-stdin-open")
    return args


async def create(runtime: OciRuntime, spec: MonitorSpec) -> int:
    """Create the container under a new conmon; returns the container's pid."""
    args = conmon_args(runtime.executable, runtime.root, spec)
    os.makedirs(runtime.root, mode=0o700, exist_ok=True)
    os.makedirs(spec.persist_dir, mode=0o700, exist_ok=True)
    os.makedirs(spec.socket_dir, mode=0o700, exist_ok=True)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            env={**os.environ, "_OCI_SYNCPIPE": str(write_fd)},
            pass_fds=(write_fd,),
            cwd=spec.bundle,  # conmon drops files (e.g. "oom") in its working directory
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        os.close(write_fd)
        write_fd = -1
        _, err = await proc.communicate()  # the first conmon exits once it has daemonized
        if proc.returncode != 0:
            raise FailedPrecondition(f"conmon failed: {err.decode(errors='replace').strip()}")
        doc = await _read_sync(read_fd, SYNC_TIMEOUT)
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
    pid = doc.get("data")
    if not isinstance(pid, int) or pid <= 0:
        message = str(doc.get("message") or f"conmon reported {doc!r}").strip()
        raise FailedPrecondition(f"{runtime.name} could not create the container: {message}")
    return pid


def conmon_pid(bundle: str) -> int:
    try:
        with open(os.path.join(bundle, "conmon.pid")) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


def reopen_log(bundle: str) -> None:
    """Ask conmon to reopen the container's log file (after kubelet rotated it)."""
    try:
        fd = os.open(os.path.join(bundle, "ctl"), os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise FailedPrecondition(f"the container's monitor is not running: {exc.strerror}") from None
    with contextlib.closing(os.fdopen(fd, "w")) as ctl:
        ctl.write(_REOPEN_LOG)


def is_conmon(pid: int) -> bool:
    """Whether ``pid`` runs conmon (a pid file may outlive its process)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip() == "conmon"
    except OSError:
        return False
