"""The SPDY framer against bytes captured on the wire between crictl 1.36 and crid.

tests/unit/data/spdy/<name>.{head.txt,client.bin,server.bin}: crictl's HTTP
request head, then each direction's bytes after the upgrade (the server's
after its ``101 Switching Protocols`` head), recorded by a TCP proxy:

- exec: ``crictl exec MAIN sh -c 'echo out; echo err >&2; exit 3'``
- exec_tty: ``crictl exec -it MAIN sh`` in an 80x24 tmux window, resized to
  100x30, then ``stty size; exit`` typed
- portforward: ``crictl port-forward POD 18080:8080``, one curl, then SIGINT
"""

import json
import struct
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from cri.streaming.spdy_frames import (
    SPDY3_DICTIONARY,
    SYN_REPLY,
    SYN_STREAM,
    Data,
    Frame,
    FrameParser,
    GoAway,
    HeaderCompressor,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    SynReply,
    SynStream,
    encode_frame,
    parse_frames,
)

DATA = Path(__file__).parent / "data" / "spdy"
NAMES = ("exec", "exec_tty", "portforward")
EXEC_VERSIONS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"]


@dataclass(frozen=True)
class Capture:
    head: bytes
    client_raw: bytes
    server_raw: bytes
    client: list[Frame]
    server: list[Frame]


@cache
def load(name: str) -> Capture:
    client_raw = (DATA / f"{name}.client.bin").read_bytes()
    server_raw = (DATA / f"{name}.server.bin").read_bytes()
    # parse_frames: one parser, so one zlib context, per direction
    return Capture(
        (DATA / f"{name}.head.txt").read_bytes(),
        client_raw,
        server_raw,
        parse_frames(client_raw),
        parse_frames(server_raw),
    )


def split(raw: bytes) -> list[bytes]:
    """The wire bytes of each frame, cut by the 24-bit length field alone."""
    frames, offset = [], 0
    while offset < len(raw):
        length = struct.unpack_from(">I", raw, offset + 4)[0] & 0xFFFFFF
        frames.append(raw[offset : offset + 8 + length])
        offset += 8 + length
    return frames


def data_on(frames: list[Frame], stream_id: int) -> bytes:
    return b"".join(f.data for f in frames if isinstance(f, Data) and f.stream_id == stream_id)


def stream_types(frames: list[Frame]) -> list[tuple[int, str]]:
    return [(f.stream_id, f.headers["streamtype"][0]) for f in frames if isinstance(f, SynStream)]


def fins(frames: list[Frame]) -> list[int]:
    return [f.stream_id for f in frames if isinstance(f, Data) and f.fin]


def check_server_replies(capture: Capture) -> None:
    """A SYN_REPLY per client stream, in order, before any DATA on it; GOAWAY naming the last stream ends it."""
    opened = [f.stream_id for f in capture.client if isinstance(f, SynStream)]
    replies = [f for f in capture.server if isinstance(f, SynReply)]
    assert [r.stream_id for r in replies] == opened
    assert all(r.headers == {} and not r.fin for r in replies)
    for reply in replies:
        first_data = next(
            (i for i, f in enumerate(capture.server) if isinstance(f, Data) and f.stream_id == reply.stream_id),
            len(capture.server),
        )
        assert capture.server.index(reply) < first_data
    assert capture.server[-1] == GoAway(max(opened))
    assert sum(isinstance(f, GoAway) for f in capture.server) == 1


def head_lines(name: str) -> list[str]:
    head = load(name).head
    assert head.endswith(b"\r\n\r\n") and b"\n" not in head.replace(b"\r\n", b"")
    return head.decode("ascii").split("\r\n")[:-2]


def header_values(lines: list[str], name: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in lines[1:] if line.split(": ", 1)[0].lower() == name.lower()]


@pytest.mark.parametrize(
    ("name", "path", "versions"),
    [
        ("exec", "/exec/", EXEC_VERSIONS),
        ("exec_tty", "/exec/", EXEC_VERSIONS),
        ("portforward", "/portforward/", ["portforward.k8s.io"]),
    ],
)
def test_request_head(name: str, path: str, versions: list[str]) -> None:
    lines = head_lines(name)
    method, target, version = lines[0].split(" ")
    assert (method, version) == ("POST", "HTTP/1.1") and target.startswith(path)
    assert header_values(lines, "Connection") == ["Upgrade"]
    assert header_values(lines, "Upgrade") == ["SPDY/3.1"]
    # one header line per version, most preferred first, with client-go's canonical name
    assert [line for line in lines if line.startswith("X-Stream-Protocol-Version: ")] == [
        f"X-Stream-Protocol-Version: {v}" for v in versions
    ]


def test_exec_client_frames() -> None:
    # crictl half-closes nothing and sends no GOAWAY: crid's GOAWAY comes first, and
    # spdystream's Close sends none once the peer has gone away
    assert load("exec").client == [
        SynStream(1, {"streamtype": ["error"]}),
        SynStream(3, {"streamtype": ["stdout"]}),
        SynStream(5, {"streamtype": ["stderr"]}),
    ]


def test_exec_server_frames() -> None:
    capture = load("exec")
    check_server_replies(capture)
    assert data_on(capture.server, 3) == b"out\n"
    assert data_on(capture.server, 5) == b"err\n"
    assert sorted(fins(capture.server)) == [1, 3, 5]
    status: dict[str, Any] = json.loads(data_on(capture.server, 1))
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    # the status is the error stream's last word: written after the output streams ended
    status_at = next(i for i, f in enumerate(capture.server) if isinstance(f, Data) and f.stream_id == 1 and f.data)
    last_output_fin = max(i for i, f in enumerate(capture.server) if isinstance(f, Data) and f.fin and f.stream_id != 1)
    assert status_at > last_output_fin


def test_exec_tty_client_frames() -> None:
    client = load("exec_tty").client
    # a tty merges stderr into stdout: no stderr stream; resize is opened last
    assert stream_types(client) == [(1, "error"), (3, "stdin"), (5, "stdout"), (7, "resize")]
    assert all(not f.flags for f in client if isinstance(f, SynStream))
    stdin = data_on(client, 3)
    assert stdin.endswith(b"stty size; exit\r")
    sizes = [json.loads(line) for line in data_on(client, 7).splitlines()]
    assert data_on(client, 7).endswith(b"\n")
    assert sizes == [{"Width": 80, "Height": 24}, {"Width": 100, "Height": 30}]
    assert [list(s) for s in sizes] == [["Width", "Height"]] * 2
    # client-go pings every 5 s; the session outlived one period
    assert [f for f in client if isinstance(f, Ping)] == [Ping(1)]
    assert fins(client) == []
    assert not any(isinstance(f, GoAway | RstStream) for f in client)


def test_exec_tty_server_frames() -> None:
    capture = load("exec_tty")
    check_server_replies(capture)
    stdout = data_on(capture.server, 5)
    assert b"stty size; exit\r\n30 100\r\n" in stdout  # the echo, then the resized window
    assert json.loads(data_on(capture.server, 1)) == {"metadata": {}, "status": "Success"}
    assert sorted(fins(capture.server)) == [1, 5]
    assert [f for f in capture.server if isinstance(f, Ping)] == [Ping(1)]  # the client's ping echoed
    assert data_on(capture.server, 3) == data_on(capture.server, 7) == b""


def test_portforward_client_frames() -> None:
    client = load("portforward").client
    pair = {"port": ["8080"], "requestid": ["0"]}
    assert client[:3] == [
        SynStream(1, {"streamtype": ["error"], **pair}),
        Data(1, b"", 1),  # the error stream is read-only for the client: half-closed at once
        SynStream(3, {"streamtype": ["data"], **pair}),
    ]
    request = data_on(client, 3)
    assert request.startswith(b"GET / HTTP/1.1\r\n") and request.endswith(b"\r\n\r\n")
    # the local connection done, client-go removes (resets) its streams rather than
    # half-closing; crictl's SIGINT then closes the session with GOAWAY
    assert client[-2:] == [RstStream(3, RstStatus.CANCEL), GoAway(0)]
    assert fins(client) == [1]


def test_portforward_server_frames() -> None:
    capture = load("portforward")
    check_server_replies(capture)
    response = data_on(capture.server, 3)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n")
    assert response.endswith(b"\r\n\r\nhello-from-pod\n")
    assert data_on(capture.server, 1) == b""  # no error to report
    assert fins(capture.server) == [3, 1]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", ["client", "server"])
def test_reencode_round_trip(name: str, side: str) -> None:
    capture = load(name)
    frames: list[Frame] = getattr(capture, side)
    raw: bytes = getattr(capture, f"{side}_raw")
    compressor = HeaderCompressor()
    encoded = [encode_frame(f, compressor) for f in frames]
    assert parse_frames(b"".join(encoded)) == frames
    # frames without a header block carry no zlib state: byte for byte as on the wire
    wire = split(raw)
    assert len(wire) == len(frames)
    for frame, ours, theirs in zip(frames, encoded, wire, strict=True):
        if not isinstance(frame, SynStream | SynReply | HeadersFrame):
            assert ours == theirs, frame


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("side", ["client_raw", "server_raw"])
def test_byte_at_a_time(name: str, side: str) -> None:
    raw: bytes = getattr(load(name), side)
    parser = FrameParser()
    frames = [frame for i in range(len(raw)) for frame in parser.feed(raw[i : i + 1])]
    parser.close()
    assert frames == parse_frames(raw)


def block_names(block: bytes) -> list[bytes]:
    """The names of an uncompressed name/value block, as sent (the parser lower-cases them)."""
    (count,) = struct.unpack_from(">I", block)
    names, offset = [], 4
    for _ in range(count):
        (n,) = struct.unpack_from(">I", block, offset)
        names.append(block[offset + 4 : offset + 4 + n])
        offset += 4 + n
        offset += 4 + struct.unpack_from(">I", block, offset)[0]
    return names


@pytest.mark.parametrize("name", NAMES)
def test_header_names_lower_case_on_the_wire(name: str) -> None:
    sent: list[bytes] = []
    for raw in (load(name).client_raw, load(name).server_raw):
        inflate = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        for frame in split(raw):
            first = struct.unpack_from(">I", frame)[0]
            kind = first & 0xFFFF if first & 0x80000000 else None
            if kind in (SYN_STREAM, SYN_REPLY):
                sent += block_names(inflate.decompress(frame[18:] if kind == SYN_STREAM else frame[12:]))
    assert b"streamtype" in sent
    assert all(n == n.lower() for n in sent), sent
