"""Kubernetes' remotecommand protocol (exec, attach) on SPDY or WebSocket.

Over SPDY the client opens one stream per stdio stream, told apart by their
``streamtype`` header (error, stdin, stdout, stderr, resize); the server
waits (bounded) until all it expects have arrived. Over WebSocket they are
channels 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize. Either way the
session ends with the command's status on the error stream: a JSON
``metav1.Status`` from v4 on (``NonZeroExitCode`` carries the exit code),
plain text for a failure before that. Resize events are JSON
``{"Width": W, "Height": H}`` documents, one after the other.
"""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from cri.runtime.stdio import Sink, Source, Stdio, TerminalSize
from cri.streaming.channels import ChannelConn, ChannelProtocol
from cri.streaming.spdy_session import SessionClosed, SpdySession, Stream

# SPDY X-Stream-Protocol-Version values, most preferred first (kubelet's order). v5 differs
# from v4 only on WebSocket (its close signal); over SPDY a FIN already half-closes.
SPDY_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
WEBSOCKET_PROTOCOLS = (
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
    "",
)
STDIN, STDOUT, STDERR, ERROR, RESIZE = range(5)
RESIZE_BUFFER_LIMIT = 64 * 1024


class StreamSetupError(Exception):
    """The client did not open the streams the session needs."""


@dataclass(frozen=True)
class Options:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


# --- statuses --------------------------------------------------------------------------


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int, cmd: list[str] | None = None) -> dict[str, Any]:
    """What kubelet sends for a non-zero exit: clients turn the cause into their own exit status."""
    what = f"error executing command {cmd}, exit code {code}" if cmd else f"exit code {code}"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {what}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(message: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def encode_status(status: dict[str, Any], json_status: bool) -> bytes:
    """v4+: the JSON Status; before: the message of a failure, nothing for success."""
    if json_status:
        return json.dumps(status, separators=(",", ":")).encode()
    return b"" if status.get("status") == "Success" else str(status.get("message", "")).encode()


# --- resize events ---------------------------------------------------------------------------


async def terminal_sizes(source: Source) -> AsyncIterator[TerminalSize]:
    """Sizes from a resize stream: JSON documents back to back (or newline separated)."""
    decoder = json.JSONDecoder()
    buf = ""
    while data := await source.read():
        buf += data.decode(errors="replace")
        if len(buf) > RESIZE_BUFFER_LIMIT:
            return  # not resize events: stop listening
        while True:
            buf = buf.lstrip()
            if not buf:
                break
            try:
                doc, end = decoder.raw_decode(buf)
            except ValueError:
                break  # incomplete: wait for more
            buf = buf[end:]
            if isinstance(doc, dict):
                width, height = doc.get("Width", doc.get("width")), doc.get("Height", doc.get("height"))
                if isinstance(width, int) and isinstance(height, int) and 0 <= width < 65536 and 0 <= height < 65536:
                    yield TerminalSize(width, height)


# --- SPDY ---------------------------------------------------------------------------------------


@dataclass
class SpdyStreams:
    stdio: Stdio
    error: Stream | None


async def collect_spdy_streams(session: SpdySession, opts: Options, protocol: str, seconds: float) -> SpdyStreams:
    """Wait until the client has opened every stream the options call for."""
    resizing = protocol not in ("v2.channel.k8s.io", "channel.k8s.io", "")
    kinds = {"error"} | {k for k, on in (("stdin", opts.stdin), ("stdout", opts.stdout), ("stderr", opts.stderr)) if on}
    if opts.tty and resizing:
        kinds.add("resize")
    got: dict[str, Stream] = {}

    async def gather() -> None:
        while not kinds <= got.keys():
            stream = await session.accept_stream()
            kind = (stream.header("streamtype") or "").lower()
            if kind in ("error", "stdin", "stdout", "stderr", "resize"):
                got[kind] = stream
            else:
                stream.reset()  # Kubernetes logs "unexpected stream type" and ignores it

    try:
        await asyncio.wait_for(gather(), seconds)
    except TimeoutError:
        raise StreamSetupError(
            f"timed out after {seconds:g}s waiting for the client to create streams "
            f"(have {sorted(got)}, need {sorted(kinds)})"
        ) from None
    except SessionClosed as exc:
        raise StreamSetupError(f"the client went away while creating streams: {exc}") from None
    resize = got.get("resize")
    stdio = Stdio(
        stdin=got.get("stdin"),
        stdout=got.get("stdout"),
        stderr=got.get("stderr"),
        tty=opts.tty,
        resize=terminal_sizes(resize) if resize is not None else None,
    )
    return SpdyStreams(stdio, got.get("error"))


# --- WebSocket ------------------------------------------------------------------------------------


def websocket_stdio(conn: ChannelConn, opts: Options) -> Stdio:
    return Stdio(
        stdin=conn.source(STDIN) if opts.stdin else None,
        stdout=conn.sink(STDOUT) if opts.stdout else None,
        stderr=conn.sink(STDERR) if opts.stderr else None,
        tty=opts.tty,
        resize=terminal_sizes(conn.source(RESIZE)) if opts.tty else None,
    )


def websocket_readable(opts: Options) -> set[int]:
    return ({STDIN} if opts.stdin else set()) | ({RESIZE} if opts.tty else set())


async def announce(conn: ChannelConn, opts: Options) -> None:
    """An empty message on the lowest writable channel tells the client the
    session is set up (what Kubernetes sends)."""
    await conn.write(STDOUT if opts.stdout else STDERR if opts.stderr else ERROR, b"")


async def finish(error: Sink | None, status: dict[str, Any], protocol: ChannelProtocol | str) -> None:
    """Write the status on the error stream and end it; a vanished client is fine."""
    json_status = protocol.json_status if isinstance(protocol, ChannelProtocol) else protocol in SPDY_PROTOCOLS[:2]
    if error is None:
        return
    with contextlib.suppress(ConnectionError):
        data = encode_status(status, json_status)
        if data:
            await error.write(data)
        await error.close()
