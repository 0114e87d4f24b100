"""A short-lived child with its output captured: exec probes, the OCI runtime's commands, CNI plugins.

An asyncio subprocess (a Popen, two transports and their protocols, a watcher) costs the daemon
0.8 ms of CPU per ``/bin/true`` here, this 0.5 ms; ExecSync runs one per probe, every few seconds
for every container of a node, and each container's start, stop and removal runs the OCI runtime.
This is the same with less: ``posix_spawn`` (vfork and exec, no Python between them), two pipes
and a pidfd watched by the loop's selector.

The child is always reaped: its pidfd stays on the loop until it has exited, also after the
caller gave up on it (a cancelled call), so no zombie is left behind.

What a child reads on stdin (a CNI plugin's config) is handed over in a memfd: a file that is
already complete when it starts, so no writer has to feed a pipe while it runs.
"""

import asyncio
import os
import signal

_READ = 64 * 1024


class Child:
    """``argv`` with stdin on /dev/null (or ``stdin``'s bytes), stdout and stderr on pipes; ``fd3``
    (if given) as its fd 3; crid's environment or ``env``; ``setsid``: in a session of its own.

    ``capture=False`` gives it /dev/null as stdout and stderr too: what it leaves running (a
    detached container) inherits them, and would otherwise hold the pipes open."""

    def __init__(
        self,
        argv: list[str],
        limit: int,
        fd3: int | None = None,
        capture: bool = True,
        *,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
        setsid: bool = False,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._limit = limit
        stdin_fd = _memfd(stdin) if stdin is not None else -1
        pipes = [os.pipe2(os.O_CLOEXEC) for _ in range(2 if capture else 0)]
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_DUP2, stdin_fd, 0)
            if stdin_fd >= 0
            else (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)
        ]
        if capture:
            actions += [(os.POSIX_SPAWN_DUP2, pipes[0][1], 1), (os.POSIX_SPAWN_DUP2, pipes[1][1], 2)]
        else:
            actions += [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
        if fd3 is not None:
            actions.append((os.POSIX_SPAWN_DUP2, fd3, 3))
        try:
            self.pid = os.posix_spawnp(
                argv[0], argv, os.environ if env is None else env, file_actions=actions, setsid=setsid
            )
        except BaseException:
            for r, _ in pipes:
                os.close(r)
            raise
        finally:
            for _, w in pipes:
                os.close(w)
            if stdin_fd >= 0:
                os.close(stdin_fd)
        self.returncode: int | None = None
        self._exited = self._loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)  # the child cannot be reaped before: we are its only waiter
        self._loop.add_reader(self._pidfd, self._reap)
        self._drained = self._loop.create_future()
        self._streams = {fd: _Capture(r) for fd, (r, _) in zip((1, 2), pipes, strict=False)}
        for stream in self._streams.values():
            os.set_blocking(stream.fd, False)
            self._loop.add_reader(stream.fd, self._read, stream)
        if not self._streams:
            self._drained.set_result(None)

    def _read(self, stream: "_Capture") -> None:
        try:
            chunk = os.read(stream.fd, _READ)
        except BlockingIOError:
            return
        if chunk:
            stream.keep(chunk, self._limit)
            return
        self._close(stream)
        if all(s.fd < 0 for s in self._streams.values()) and not self._drained.done():
            self._drained.set_result(None)

    def _close(self, stream: "_Capture") -> None:
        if stream.fd >= 0:
            self._loop.remove_reader(stream.fd)
            os.close(stream.fd)
            stream.fd = -1

    def _reap(self) -> None:
        self._loop.remove_reader(self._pidfd)
        _, status = os.waitpid(self.pid, 0)
        os.close(self._pidfd)
        self._pidfd = -1
        self.returncode = os.waitstatus_to_exitcode(status)  # -N: killed by signal N, as asyncio has it
        if not self._exited.done():
            self._exited.set_result(self.returncode)

    def output(self, fd: int) -> tuple[bytes, bool]:
        """What the child wrote to stdout (1) or stderr (2), and whether it was cut at the limit."""
        stream = self._streams.get(fd)
        return (bytes(stream.data), stream.truncated) if stream is not None else (b"", False)

    async def communicate(self) -> int:
        """Read both pipes to their end and wait for the exit; the exit code."""
        await asyncio.shield(self._drained)
        return await self.wait()

    async def wait(self) -> int:
        return int(await asyncio.shield(self._exited))

    def children(self) -> list[int]:
        """The child's own children (``runc exec`` is their subreaper: the command it runs is one)."""
        pids = []
        try:
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with open(f"/proc/{self.pid}/task/{tid}/children") as f:
                    pids += [int(p) for p in f.read().split()]
        except OSError:
            pass  # gone, or a kernel without CONFIG_PROC_CHILDREN
        return pids

    def kill(self) -> None:
        if self._pidfd >= 0:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)

    def close(self) -> None:
        """Stop reading; the exit is still reaped when it comes."""
        for stream in self._streams.values():
            self._close(stream)


def _memfd(data: bytes) -> int:
    """A memfd holding ``data``, at offset 0 (the child shares the offset and reads from there)."""
    fd = os.memfd_create("child-stdin", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


class _Capture:
    """One output pipe and what was read of it, up to a limit."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.data = bytearray()
        self.truncated = False

    def keep(self, chunk: bytes, limit: int) -> None:
        room = limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True
