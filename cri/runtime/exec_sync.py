"""ExecSync: a command run to its end in a running container, its output captured.

The command is the container's own process (user, env, cwd, capabilities...)
with other args, run by the OCI runtime's exec; its output is kept up to
EXEC_OUTPUT_LIMIT per stream. A timeout or a client gone kills it.
"""

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass

from cri.errors import DeadlineExceeded, FailedPrecondition
from cri.runtime.child import Child
from cri.runtime.exec_process import container_process
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
    # the process file is a memfd, the runtime's fd 3: no file to create and unlink in the bundle
    memfd = os.memfd_create("crid-exec-process", os.MFD_CLOEXEC)
    try:
        os.write(memfd, json.dumps(process).encode())
        argv = runtime.exec_command(container_id, "/proc/self/fd/3", None)
        try:
            child = Child(argv, EXEC_OUTPUT_LIMIT, fd3=memfd)
        except OSError as exc:
            raise FailedPrecondition(f"cannot run the OCI runtime {argv[0]}: {exc.strerror}") from None
    finally:
        os.close(memfd)
    try:
        try:
            code = await asyncio.wait_for(child.communicate(), timeout if timeout > 0 else None)
        except TimeoutError:
            await _end_exec(child)
            raise DeadlineExceeded(f"command {cmd!r} timed out after {timeout}s and was killed") from None
        except asyncio.CancelledError:  # the client went away (its own deadline): the command goes too
            await _end_exec(child)
            raise
    finally:
        child.close()
    (out, cut_out), (err, cut_err) = child.output(1), child.output(2)
    return ExecResult(out + (_TRUNCATED if cut_out else b""), err + (_TRUNCATED if cut_err else b""), code)


async def _end_exec(child: Child) -> None:
    """Kill an exec'd command and let ``runc exec`` reap it before it exits (killing runc
    first would leave the command a zombie in the container). runc exec is the subreaper of
    what it runs: the command is its child."""
    for pid in child.children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        await asyncio.wait_for(child.wait(), KILL_WAIT)
    except TimeoutError:
        child.kill()
        await child.wait()
