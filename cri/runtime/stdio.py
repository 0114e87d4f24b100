"""What a streaming session hands the runtime: byte sources and sinks.

The streaming server (cri/server/streaming*, over SPDY or WebSocket) turns a
client's streams into these; exec, attach and port-forward in cri/runtime
only ever see this interface, so they can be tested with in-memory fakes.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class Source(Protocol):
    """Bytes from the client (stdin, or a forwarded connection's upstream)."""

    async def read(self) -> bytes:
        """The next chunk; b"" once the client has closed its side."""
        ...


class Sink(Protocol):
    """Bytes to the client (stdout, stderr, a forwarded connection's downstream)."""

    async def write(self, data: bytes) -> None:
        """Send ``data``; raises ConnectionError when the client is gone."""
        ...

    async def close(self) -> None:
        """End this stream (a half-close: the client sees end of file)."""
        ...


class Duplex(Source, Sink, Protocol):
    """Both directions of one forwarded connection."""


@dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


@dataclass
class Stdio:
    """The client's side of an exec or attach session. Streams the client did
    not ask for are None; ``resize`` yields terminal sizes (tty only) and ends
    when the client closes its resize stream."""

    stdin: Source | None = None
    stdout: Sink | None = None
    stderr: Sink | None = None
    tty: bool = False
    resize: AsyncIterator[TerminalSize] | None = None
