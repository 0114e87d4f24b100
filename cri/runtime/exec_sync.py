"""ExecSync: a command run to its end in a running container, its output captured.

The command is the container's own process (user, env, cwd, capabilities...)
with other args, run by the OCI runtime's exec; its output is kept up to
EXEC_OUTPUT_LIMIT per stream. A timeout or a client gone kills it.
"""

import asyncio
import contextlib
import os
import signal
import tempfile
from dataclasses import dataclass

from cri.errors import DeadlineExceeded
from cri.runtime.exec_process import container_process, write_process
from cri.runtime.oci import Runtime

EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024
KILL_WAIT = 10.0
_TRUNCATED = b"\n[crid: output truncated at 16 MiB]\n"


@dataclass(frozen=True)
class ExecResult:
    stdout: bytes
    stderr: bytes
    exit_code: int


async def exec_sync(runtime: Runtime, container_id: str, bundle: str, cmd: list[str], timeout: int) -> ExecResult:  # noqa: ASYNC109
    process = container_process(bundle)
    process.update(args=cmd, terminal=False)
    fd, process_path = tempfile.mkstemp(prefix="exec-", suffix=".json", dir=bundle)
    write_process(fd, process)
    pid_path = process_path[: -len(".json")] + ".pid"
    proc = await asyncio.create_subprocess_exec(
        *runtime.exec_command(container_id, process_path, pid_path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        reads = asyncio.gather(_read_capped(proc.stdout), _read_capped(proc.stderr), proc.wait())
        try:
            out, err, code = await asyncio.wait_for(reads, timeout if timeout > 0 else None)
        except TimeoutError:
            await _end_exec(proc, pid_path)
            raise DeadlineExceeded(f"command {cmd!r} timed out after {timeout}s and was killed") from None
        except asyncio.CancelledError:  # the client went away (its own deadline): the command goes too
            await _end_exec(proc, pid_path)
            raise
    finally:
        for path in (process_path, pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return ExecResult(out, err, code)


async def _end_exec(proc: asyncio.subprocess.Process, pid_path: str) -> None:
    """Kill an exec'd command and let ``runc exec`` reap it before it exits
    (killing runc first would leave the command a zombie in the container)."""
    _kill_exec(pid_path)
    try:
        await asyncio.wait_for(proc.wait(), KILL_WAIT)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _kill_exec(pid_path: str) -> None:
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass


async def _read_capped(stream: asyncio.StreamReader) -> bytes:
    """Read a stream to its end, keeping at most EXEC_OUTPUT_LIMIT bytes."""
    buf = bytearray()
    truncated = False
    while chunk := await stream.read(64 * 1024):
        room = EXEC_OUTPUT_LIMIT - len(buf)
        if room > 0:
            buf += chunk[:room]
        if len(chunk) > room:
            truncated = True
    return bytes(buf) + (_TRUNCATED if truncated else b"")
