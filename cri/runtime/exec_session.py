"""Exec with streams (``kubectl exec [-it]``): a command run by ``runtime exec``.

Without a tty the runtime gets pipes: stdin only when the client sends it,
stdout and stderr always (a stream the client did not ask for is read and
dropped, so the command never blocks on it).

With a tty we do as CRI-O: the runtime (not detached) gets the slave of a pty
pair as stdin, stdout, stderr and controlling terminal. runc then makes the
container's own console, copies between it and its stdin/stdout, and on
SIGWINCH resizes that console from its stdin's size. So crid reads output
from the master, writes input to it, and resizes it (TIOCSWINSZ makes the
kernel send runc the SIGWINCH). The client's first size, if it comes within
FIRST_RESIZE_WAIT, is also the process's consoleSize, so the command starts
with it. A terminal has no end-of-file: when the client's stdin ends, crid
types ^D, what a user at a terminal does.

Backpressure: a chunk is read from the command only after the client took
the previous one, and client input only after the command took the last.
A client that goes away (a sink raises ConnectionError, or the task is
cancelled) gets the command SIGKILLed and reaped by the runtime; the
ConnectionError (or CancelledError) is then raised to the caller.
"""

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
import struct
import tempfile
import termios
import tty
from collections.abc import AsyncIterator, Awaitable, Coroutine, Sequence
from typing import Any

from cri.errors import FailedPrecondition
from cri.runtime.exec_process import container_process, write_process
from cri.runtime.oci import Runtime
from cri.runtime.stdio import Sink, Source, Stdio, TerminalSize

CHUNK = 32 * 1024  # the most read from the command ahead of the client
KILL_WAIT = 10.0  # after SIGKILL to the command, how long the runtime may take to report it
FIRST_RESIZE_WAIT = 0.25  # how long a tty session waits for the client's size before it starts
EOT = b"\x04"

Process = asyncio.subprocess.Process


async def run_exec(runtime: Runtime, container_id: str, bundle: str, cmd: list[str], stdio: Stdio) -> int:
    """Run ``cmd`` in the running container with the client's streams; returns its
    exit code (128+signal when a signal killed it, as runc reports it)."""
    process = _process_spec(bundle, cmd, stdio.tty)
    fd, process_path = tempfile.mkstemp(prefix="exec-", suffix=".json", dir=bundle)
    os.close(fd)
    pid_path = process_path[: -len(".json")] + ".pid"
    argv = runtime.exec_command(container_id, process_path, pid_path)
    try:
        if stdio.tty:
            return await _run_tty(argv, pid_path, stdio, process, process_path)
        write_process(process_path, process)
        return await _run_pipes(argv, pid_path, stdio)
    finally:
        for path in (process_path, pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _process_spec(bundle: str, cmd: list[str], terminal: bool) -> dict[str, Any]:
    """The container's own process (user, env, cwd, capabilities...) with ``cmd`` as args."""
    process = container_process(bundle)
    process.update(args=cmd, terminal=terminal)
    process.pop("consoleSize", None)  # the client's, if it sent one in time
    if terminal:  # as containerd: a terminal session gets TERM=xterm
        env = [e for e in process.get("env", []) if not e.startswith("TERM=")]
        process["env"] = [*env, "TERM=xterm"]
    return process


# --- the two kinds of plumbing -------------------------------------------------------------


async def _run_pipes(argv: list[str], pid_path: str, stdio: Stdio) -> int:
    ours: list[int] = []  # our ends, closed at the very end
    theirs: list[int] = []  # the runtime's ends, closed once it has them
    try:
        stdin: int = asyncio.subprocess.DEVNULL
        if stdio.stdin is not None:
            stdin, w_in = os.pipe()
            theirs.append(stdin)
            ours.append(w_in)
        r_out, w_out = os.pipe()
        r_err, w_err = os.pipe()
        ours += [r_out, r_err]
        theirs += [w_out, w_err]
        for fd in ours:
            os.set_blocking(fd, False)
        proc = await _spawn(argv, stdin=stdin, stdout=w_out, stderr=w_err)
        _close_all(theirs)
        inputs = []
        if stdio.stdin is not None:
            inputs.append(_pipe_input(stdio.stdin, w_in, ours))
        outputs = [_output(r_out, stdio.stdout), _output(r_err, stdio.stderr)]
        return await _supervise(proc, pid_path, outputs, inputs, [r_out, r_err])
    finally:
        _close_all(theirs)
        _close_all(ours)


async def _run_tty(argv: list[str], pid_path: str, stdio: Stdio, process: dict[str, Any], process_path: str) -> int:
    master, slave = os.openpty()
    fds = [master, slave]
    first_size = asyncio.Event()
    resizing = asyncio.ensure_future(_resize(stdio.resize, master, first_size))
    try:
        os.set_blocking(master, False)
        _raw(slave)
        with contextlib.suppress(TimeoutError):  # most clients send their size at once
            await asyncio.wait_for(first_size.wait(), FIRST_RESIZE_WAIT)
        # runc gives the container's console this size before the command starts; a resize
        # later reaches it only after runc started copying, when the command may have read it
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(master, termios.TIOCGWINSZ, bytes(8)))
        if rows and cols:
            process = {**process, "consoleSize": {"height": rows, "width": cols}}
        write_process(process_path, process)
        proc = await _spawn(
            argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True, preexec_fn=_controlling_tty
        )
        fds.remove(slave)
        os.close(slave)  # the master reads EIO once the runtime, the slave's last holder, is gone
        inputs = [resizing] if stdio.stdin is None else [resizing, _tty_input(stdio.stdin, master)]
        return await _supervise(proc, pid_path, [_tty_output(master, stdio)], inputs, [master])
    finally:
        resizing.cancel()
        await asyncio.gather(resizing, return_exceptions=True)
        _close_all(fds)


async def _spawn(argv: list[str], **kwargs: Any) -> Process:
    try:
        return await asyncio.create_subprocess_exec(*argv, **kwargs)
    except OSError as exc:
        raise FailedPrecondition(f"cannot run the OCI runtime {argv[0]}: {exc.strerror}") from None


def _raw(fd: int) -> None:
    """The mode runc puts its terminal in (containerd/console's raw: output processing
    kept), set before runc starts: input sent before runc does it would be echoed back.
    runc clears ONLCR on the container's console and leaves it to this one to turn
    "\n" into "\r\n"; output in the moment before it clears it gets "\r\r\n"."""
    tty.setraw(fd, termios.TCSANOW)
    attrs = termios.tcgetattr(fd)
    attrs[1] |= termios.OPOST | termios.ONLCR
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def _controlling_tty() -> None:
    """In the runtime's child, after setsid: fd 0 (the slave) becomes its controlling terminal."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


# --- pumps ---------------------------------------------------------------------------------------


async def _output(fd: int, sink: Sink | None) -> None:
    """The command's output to the client until end of file, then end the client's stream."""
    while chunk := await _read_fd(fd):
        if sink is not None:
            await sink.write(chunk)  # the backpressure: nothing more is read until the client took it
    if sink is not None:
        await sink.close()


async def _tty_output(master: int, stdio: Stdio) -> None:
    await _output(master, stdio.stdout)
    if stdio.stderr is not None:  # a terminal has one output stream
        await stdio.stderr.close()


async def _pipe_input(source: Source, fd: int, ours: list[int]) -> None:
    """Client stdin to the command; its end closes the command's stdin."""
    while data := await source.read():
        try:
            await _write_fd(fd, data)
        except BrokenPipeError:  # the command closed its stdin: the rest of the input has no reader
            break
    ours.remove(fd)
    os.close(fd)


async def _tty_input(source: Source, master: int) -> None:
    """Client stdin to the terminal; at its end, ^D (end of file for a program reading
    a line at a time, which most shells and ``cat`` do; a program in raw mode sees the byte)."""
    try:
        while data := await source.read():
            await _write_fd(master, data)
        await _write_fd(master, EOT)
    except OSError as exc:
        if exc.errno != errno.EIO:  # EIO: the terminal's other side is gone
            raise


async def _resize(sizes: AsyncIterator[TerminalSize] | None, master: int, first: asyncio.Event) -> None:
    try:
        if sizes is not None:
            async for size in sizes:
                winsize = struct.pack("HHHH", _u16(size.height), _u16(size.width), 0, 0)
                fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)  # the kernel sends SIGWINCH to runc
                first.set()
    finally:
        first.set()


def _u16(n: int) -> int:
    return min(max(n, 0), 0xFFFF)


# --- supervision ----------------------------------------------------------------------------------


async def _supervise(
    proc: Process,
    pid_path: str,
    outputs: Sequence[Awaitable[None]],
    inputs: Sequence[Awaitable[None]],
    output_fds: list[int],
) -> int:
    """Run the pumps until the runtime has exited and the output has ended; input
    pumps are cut off then. Any failure (the client gone) or a cancel kills the command."""
    waiter = asyncio.ensure_future(proc.wait())
    out_tasks = [asyncio.ensure_future(c) for c in outputs]
    tasks = [*out_tasks, *(asyncio.ensure_future(c) for c in inputs)]
    needed: set[asyncio.Future[Any]] = {waiter, *out_tasks}
    failure: BaseException | None = None
    try:
        pending: set[asyncio.Future[Any]] = {waiter, *tasks}
        while needed:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                needed.discard(t)
                error = None if t.cancelled() else t.exception()
                if error is not None:
                    raise error
    except BaseException as exc:
        failure = exc
    await _to_the_end(_finish(proc, pid_path, tasks, output_fds, failure is not None))
    waiter.cancel()
    if failure is not None:
        raise failure
    assert proc.returncode is not None
    return 128 - proc.returncode if proc.returncode < 0 else proc.returncode


async def _finish(
    proc: Process, pid_path: str, tasks: "Sequence[asyncio.Future[None]]", output_fds: list[int], kill: bool
) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    if kill and proc.returncode is None:
        # keep reading what is left, or the runtime could block writing it and never exit
        drains = [asyncio.ensure_future(_output(fd, None)) for fd in output_fds]
        await _stop(proc, pid_path)
        for d in drains:
            d.cancel()
        await asyncio.gather(*drains, return_exceptions=True)


async def _stop(proc: Process, pid_path: str) -> None:
    """SIGKILL the command (its pid is in the pid file once the runtime started it) and
    let the runtime reap it: killing the runtime first would leave a zombie in the
    container. The runtime itself is killed only if it does not finish in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + KILL_WAIT
    killed = False
    while proc.returncode is None and loop.time() < deadline:
        killed = killed or _kill_pid_file(pid_path)
        with contextlib.suppress(TimeoutError):  # not started yet: look for the pid file again soon
            await asyncio.wait_for(proc.wait(), 0.05 if not killed else deadline - loop.time())
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def _kill_pid_file(pid_path: str) -> bool:
    """SIGKILL the pid in the file; False while there is none yet."""
    try:
        with open(pid_path) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


async def _to_the_end(work: Coroutine[Any, Any, None]) -> None:
    """Cleanup that a cancel must not cut short; a cancel meanwhile is raised after it."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    task.result()
    if cancelled:
        raise asyncio.CancelledError


# --- non-blocking fds on the event loop ---------------------------------------------------------


async def _wait_fd(fd: int, writable: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    (loop.add_writer if writable else loop.add_reader)(fd, wake)
    try:
        await ready
    finally:
        (loop.remove_writer if writable else loop.remove_reader)(fd)


async def _read_fd(fd: int) -> bytes:
    """The next chunk from a non-blocking fd; b"" at its end (EIO from a pty master is
    its end too: the other side is closed)."""
    while True:
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            pass
        except OSError as exc:
            if exc.errno == errno.EIO:
                return b""
            raise
        await _wait_fd(fd, writable=False)


async def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
            continue
        except BlockingIOError:
            pass
        await _wait_fd(fd, writable=True)


def _close_all(fds: list[int]) -> None:
    while fds:
        with contextlib.suppress(OSError):
            os.close(fds.pop())
