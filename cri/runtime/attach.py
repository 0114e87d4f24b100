"""Attach (``kubectl attach``): the client joins a running container's stdio through conmon.

conmon (see monitor.py) listens on a SOCK_SEQPACKET socket, ``attach`` in the
bundle, which crid reaches through the ``<state>/attach/<id>`` symlink conmon
makes. Each packet conmon sends is one byte naming the pipe (conmon's
STDOUT_PIPE 2, STDERR_PIPE 3) and then what it read from it. What the client
sends goes to the socket as is, and conmon writes it to the container's stdin;
shutting down our side makes conmon close that stdin when the container was
started with stdin_once. Terminal resizes go to conmon's control fifo ``ctl``
as ``1 <height> <width>``. conmon closes the socket when the container exits.
"""

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator

from cri.errors import FailedPrecondition
from cri.log import fields
from cri.runtime.pumps import run_pumps
from cri.runtime.stdio import Sink, Source, Stdio, TerminalSize

log = logging.getLogger(__name__)

PIPE_STDOUT, PIPE_STDERR = 2, 3
RECEIVE_SIZE = 64 * 1024  # conmon's packets are at most 8 KiB of data and the pipe byte
SEND_SIZE = 8 * 1024  # conmon reads each packet into a 32 KiB buffer: a bigger one would be cut
RESIZE_EVENT = 1
SUN_PATH_MAX = 107  # sockaddr_un.sun_path holds 108 bytes with the NUL


async def attach(bundle: str, attach_socket: str, stdio: Stdio, container_has_stdin: bool) -> None:
    """Copy the container's output to the client (and its input to the container)
    until the container exits. Raises ConnectionError when the client goes away."""
    loop = asyncio.get_running_loop()
    sock = await _connect(attach_socket)
    try:
        output = asyncio.ensure_future(_output(loop, sock, stdio.stdout, stdio.stderr))
        tasks = [output]
        if container_has_stdin and stdio.stdin is not None:
            tasks.append(asyncio.ensure_future(_input(loop, sock, stdio.stdin)))
        if stdio.resize is not None:
            tasks.append(asyncio.ensure_future(_resize(bundle, stdio.resize)))
        await run_pumps(tasks, needed=[output])
    finally:
        sock.close()
    for sink in (stdio.stdout, stdio.stderr):
        if sink is not None:
            await sink.close()


async def _connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sock.setblocking(False)
    dirfd = -1
    try:
        address = path
        if len(os.fsencode(path)) > SUN_PATH_MAX:  # too long for sun_path: through the directory's fd
            dirfd = os.open(os.path.dirname(path), os.O_PATH | os.O_CLOEXEC)
            address = f"/proc/self/fd/{dirfd}/{os.path.basename(path)}"
        await asyncio.get_running_loop().sock_connect(sock, address)
    except OSError as exc:
        sock.close()
        raise FailedPrecondition(f"cannot attach: the container's monitor is not listening ({exc.strerror})") from None
    finally:
        if dirfd >= 0:
            os.close(dirfd)
    return sock


async def _output(loop: asyncio.AbstractEventLoop, sock: socket.socket, out: Sink | None, err: Sink | None) -> None:
    sinks = {PIPE_STDOUT: out, PIPE_STDERR: err}
    while True:
        try:
            packet = await loop.sock_recv(sock, RECEIVE_SIZE)
        except ConnectionResetError:  # conmon went away
            return
        if not packet:
            return
        sink = sinks.get(packet[0])
        if sink is not None and len(packet) > 1:
            await sink.write(packet[1:])  # the next packet is read once the client took this one


async def _input(loop: asyncio.AbstractEventLoop, sock: socket.socket, source: Source) -> None:
    while data := await source.read():
        view = memoryview(data)
        for i in range(0, len(view), SEND_SIZE):
            try:
                await loop.sock_sendall(sock, view[i : i + SEND_SIZE])
            except (BrokenPipeError, ConnectionResetError):
                return  # conmon is gone: the output side sees that too and ends the attach
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


async def _resize(bundle: str, sizes: AsyncIterator[TerminalSize]) -> None:
    async for size in sizes:
        _send_resize(bundle, size)


def _send_resize(bundle: str, size: TerminalSize) -> None:
    """One line to conmon's control fifo: a write of a short line is atomic and,
    non-blocking, never waits for conmon."""
    line = f"{RESIZE_EVENT} {size.height} {size.width}\n".encode()
    try:
        fd = os.open(os.path.join(bundle, "ctl"), os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:  # ENXIO: conmon is gone, the attach is about to end anyway
        log.debug("resize not sent", extra=fields(bundle=bundle, error=exc.strerror))
        return
    try:
        with contextlib.suppress(BlockingIOError):  # a full fifo: conmon is stuck, drop this size
            os.write(fd, line)
    finally:
        os.close(fd)
