"""Port-forward (``kubectl port-forward``): one client connection to localhost:PORT in a pod.

The sockets are made inside the pod's network namespace, on a namespaces
EXECUTOR thread that enters it (a socket stays in the namespace it was made
in), and connected from the event loop, so a slow connect never holds one of
the few namespace threads. As containerd: 127.0.0.1 first, then ::1.

Then bytes flow both ways, each direction reading its next chunk only once
the other end took the last (the backpressure). The client's end of input
half-closes the pod's connection and the pod's end of output ends the client's
stream; the forward is over when both ends are, or at once on an error.
"""

import asyncio
import contextlib
import os
import socket

from cri.errors import FailedPrecondition, InvalidArgument, Unavailable
from cri.runtime import namespaces
from cri.runtime.pumps import run_pumps
from cri.runtime.stdio import Duplex

CHUNK = 64 * 1024
CONNECT_TIMEOUT = 10.0
_TARGETS = (("IPv4", socket.AF_INET, "127.0.0.1"), ("IPv6", socket.AF_INET6, "::1"))


async def forward(netns: str | None, port: int, stream: Duplex) -> None:
    """Forward ``stream`` to localhost:``port`` in ``netns`` (None: the host's network).
    Raises FailedPrecondition when nothing answers there, Unavailable when the pod's
    side of the connection fails, ConnectionError when the client goes away."""
    if not 0 < port < 65536:
        raise InvalidArgument(f"port {port} is not a TCP port (1-65535)")
    sock = await _dial(netns, port)
    try:
        await _pump(sock, stream, port)
    finally:
        sock.close()


def _make_sockets(netns: str | None) -> list[socket.socket | OSError]:
    """One TCP socket per family, made inside ``netns``. Blocking: run on EXECUTOR."""
    made: list[socket.socket | OSError] = []
    with namespaces._entered({"net": netns}) if netns else contextlib.nullcontext():
        for _, family, _ in _TARGETS:
            try:
                made.append(socket.socket(family, socket.SOCK_STREAM))
            except OSError as exc:  # e.g. no IPv6 in this namespace
                made.append(exc)
    return made


async def _dial(netns: str | None, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    where = f"inside namespace {netns}" if netns else "in the host's network namespace"
    try:
        made = await loop.run_in_executor(namespaces.EXECUTOR, _make_sockets, netns)
    except OSError as exc:
        raise FailedPrecondition(f"cannot enter the pod's network namespace {netns}: {exc.strerror}") from None
    reasons = []
    chosen: socket.socket | None = None
    try:
        for (label, _, address), sock in zip(_TARGETS, made, strict=True):
            if isinstance(sock, OSError):
                reasons.append(f"{label}: {sock.strerror}")
                continue
            if chosen is not None:
                break
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (address, port)), CONNECT_TIMEOUT)
                chosen = sock
            except TimeoutError:
                reasons.append(f"{label}: no answer within {CONNECT_TIMEOUT:g}s")
            except OSError as exc:  # asyncio's strerror is "Connect call failed": the errno says why
                reasons.append(f"{label}: {os.strerror(exc.errno) if exc.errno else exc}")
    finally:
        for sock in made:
            if isinstance(sock, socket.socket) and sock is not chosen:
                sock.close()
    if chosen is None:
        raise FailedPrecondition(f"failed to connect to localhost:{port} {where}, {' '.join(reasons)}")
    return chosen


async def _pump(sock: socket.socket, stream: Duplex, port: int) -> None:
    loop = asyncio.get_running_loop()
    tasks = [
        asyncio.ensure_future(_upstream(loop, sock, stream)),
        asyncio.ensure_future(_downstream(loop, sock, stream, port)),
    ]
    await run_pumps(tasks, cancelled_is_error=True)


async def _upstream(loop: asyncio.AbstractEventLoop, sock: socket.socket, stream: Duplex) -> None:
    """Client to pod, then a half-close so that the pod's side sees end of file."""
    while data := await stream.read():
        try:
            await loop.sock_sendall(sock, data)
        except (BrokenPipeError, ConnectionResetError):
            # the pod closed its side: nothing more can go up; whether that was an
            # error, the downstream tells (end of file, or a reset)
            return
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


async def _downstream(loop: asyncio.AbstractEventLoop, sock: socket.socket, stream: Duplex, port: int) -> None:
    """Pod to client, then the end of the client's stream."""
    while True:
        try:
            data = await loop.sock_recv(sock, CHUNK)
        except OSError as exc:
            raise Unavailable(f"the connection to localhost:{port} in the pod failed: {exc.strerror}") from None
        if not data:
            break
        await stream.write(data)
    await stream.close()
