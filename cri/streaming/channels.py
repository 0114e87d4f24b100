"""Kubernetes' channel protocols over one WebSocket.

Each message starts with a channel number: one byte (``channel.k8s.io``,
``v4.channel.k8s.io``, ``v5.channel.k8s.io``) or one ASCII digit followed by
base64 data (``base64.channel.k8s.io``, ``v4.base64.channel.k8s.io``). v5
adds a half-close from the client: the two bytes ``[255, channel]`` end that
channel (servers never send it: client-go does not understand it). A
message for a channel nobody reads, or that does not exist, is dropped, as
Kubernetes does.
"""

import asyncio
import base64
import binascii
from dataclasses import dataclass

from cri.streaming.websocket import WebSocket

CLOSE_SIGNAL = 255
QUEUE_MESSAGES = 16  # per readable channel: the socket is not read while a channel's queue is full


@dataclass(frozen=True)
class ChannelProtocol:
    name: str
    base64: bool = False
    close_signal: bool = False  # v5's [255, channel] half-close
    json_status: bool = False  # v4 and later: the error channel carries a JSON Status


CHANNEL_PROTOCOLS = {
    p.name: p
    for p in (
        ChannelProtocol("v5.channel.k8s.io", close_signal=True, json_status=True),
        ChannelProtocol("v4.channel.k8s.io", json_status=True),
        ChannelProtocol("v4.base64.channel.k8s.io", base64=True, json_status=True),
        ChannelProtocol("channel.k8s.io"),
        ChannelProtocol("base64.channel.k8s.io", base64=True),
        ChannelProtocol(""),  # no subprotocol offered: the binary channel protocol
    )
}


def choose(offered: list[str], supported: tuple[str, ...]) -> str | None:
    """The first offered protocol we support ("" when none was offered)."""
    if not offered:
        return "" if "" in supported else None
    return next((p for p in offered if p in supported), None)


class ChannelConn:
    """Channels ``readable`` deliver what the client sends; any channel can be
    written. ``run()`` reads the socket until it closes."""

    def __init__(self, ws: WebSocket, protocol: ChannelProtocol, readable: set[int]) -> None:
        self.ws = ws
        self.protocol = protocol
        # None in a queue marks the end of that channel; the semaphore bounds the data queued
        self._queues: dict[int, asyncio.Queue[bytes | None]] = {ch: asyncio.Queue() for ch in readable}
        self._room = {ch: asyncio.Semaphore(QUEUE_MESSAGES) for ch in readable}
        self._ended: set[int] = set()
        self.done = asyncio.Event()  # the client closed the connection

    def source(self, channel: int) -> "ChannelSource":
        return ChannelSource(self, channel)

    def sink(self, channel: int) -> "ChannelSink":
        return ChannelSink(self, channel)

    async def run(self) -> None:
        try:
            while (message := await self.ws.recv()) is not None:
                await self._dispatch(message)
        finally:
            self.done.set()
            for ch in list(self._queues):
                self._end(ch)

    async def _dispatch(self, message: bytes | str) -> None:
        if isinstance(message, str):
            message = message.encode()
        if not message:
            return
        if self.protocol.close_signal and message[0] == CLOSE_SIGNAL:
            if len(message) == 2:
                self._end(message[1])
            return
        channel, data = message[0], message[1:]
        if self.protocol.base64:
            channel -= ord("0")
            try:
                data = base64.b64decode(data, validate=True)
            except binascii.Error:
                return  # Kubernetes logs and drops an undecodable frame too
        if not data or channel not in self._queues or channel in self._ended:
            return
        await self._room[channel].acquire()  # waits while the reader is behind: backpressure onto the socket
        self._queues[channel].put_nowait(data)

    def _end(self, channel: int) -> None:
        if channel in self._queues and channel not in self._ended:
            self._ended.add(channel)
            self._queues[channel].put_nowait(None)

    async def read(self, channel: int) -> bytes:
        queue = self._queues.get(channel)
        if queue is None:
            return b""
        data = await queue.get()
        if data is None:
            queue.put_nowait(None)  # every later read sees the end too
            return b""
        self._room[channel].release()
        return data

    async def write(self, channel: int, data: bytes) -> None:
        if self.protocol.base64:
            await self.ws.send(chr(ord("0") + channel) + base64.b64encode(data).decode())
        else:
            await self.ws.send(bytes([channel]) + data)


class ChannelSource:
    def __init__(self, conn: ChannelConn, channel: int) -> None:
        self.conn, self.channel = conn, channel

    async def read(self) -> bytes:
        return await self.conn.read(self.channel)


class ChannelSink:
    def __init__(self, conn: ChannelConn, channel: int) -> None:
        self.conn, self.channel = conn, channel

    async def write(self, data: bytes) -> None:
        if data:
            await self.conn.write(self.channel, data)

    async def close(self) -> None:
        """Nothing to send: v5's close signal goes from the client to the server
        only (client-go's reader discards it as an unknown stream); a channel
        ends for the client when the connection does."""
