"""SPDY/3.1 framing: wire layout, round trips, shared zlib contexts, partial feeds, limits."""

import hashlib
import struct
import zlib
from pathlib import Path

import pytest

from cri.streaming import spdy_frames as f
from cri.streaming.spdy_frames import (
    Data,
    FrameParser,
    GoAway,
    HeaderCompressor,
    HeadersFrame,
    Ping,
    ProtocolError,
    RstStream,
    Setting,
    Settings,
    SynReply,
    SynStream,
    WindowUpdate,
)

# computed from moby/spdystream spdy/dictionary.go (commit f0be51f, the byte array as written there)
UPSTREAM_DICTIONARY_LENGTH = 1423
UPSTREAM_DICTIONARY_SHA256 = "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"

FRAMES: list[f.Frame] = [
    SynStream(1, {"streamtype": ["stdin"], "port": ["8080"]}),
    SynStream(3, {"multi": ["a", "b", "c"]}, associated_id=1, priority=7, slot=9, flags=f.FLAG_FIN),
    SynStream(5, {}, flags=f.FLAG_UNIDIRECTIONAL),
    SynReply(1, {}),
    SynReply(3, {":status": ["200"]}, flags=f.FLAG_FIN),
    HeadersFrame(1, {"x-trailer": ["done"]}, flags=f.FLAG_FIN),
    RstStream(1, f.RstStatus.CANCEL),
    Settings((Setting(4, 100, 1), Setting(7, 65536)), flags=f.FLAG_CLEAR_SETTINGS),
    Settings(),
    Ping(1),
    Ping(0xFFFFFFFF),
    GoAway(7, f.GoAwayStatus.PROTOCOL_ERROR),
    WindowUpdate(1, 65536),
    Data(1, b"hello"),
    Data(1, b"", flags=f.FLAG_FIN),
    Data(0x7FFFFFFF, bytes(range(256)) * 40),
]


def encode_all(frames: list[f.Frame]) -> bytes:
    compressor = HeaderCompressor()
    return b"".join(f.encode_frame(frame, compressor) for frame in frames)


def test_dictionary_is_spdystreams_byte_for_byte() -> None:
    assert len(f.SPDY3_DICTIONARY) == UPSTREAM_DICTIONARY_LENGTH
    assert hashlib.sha256(f.SPDY3_DICTIONARY).hexdigest() == UPSTREAM_DICTIONARY_SHA256
    assert f.SPDY3_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert f.SPDY3_DICTIONARY.endswith(b",*,enq=0.")


def test_wire_layout_of_fixed_frames() -> None:
    assert f.encode_ping(1) == bytes.fromhex("80030006 00000004 00000001")
    assert f.encode_data(1, b"hi", fin=True) == bytes.fromhex("00000001 01000002 6869")
    assert f.encode_rst_stream(3, f.RstStatus.REFUSED_STREAM) == bytes.fromhex("80030003 00000008 00000003 00000003")
    assert f.encode_goaway(5) == bytes.fromhex("80030007 00000008 00000005 00000000")
    assert f.encode_window_update(1, 10) == bytes.fromhex("80030009 00000008 00000001 0000000a")
    assert f.encode_settings([Setting(7, 65536, 1)]) == bytes.fromhex("80030004 0000000c 00000001 01000007 00010000")


def test_syn_stream_layout_and_zlib_stream_with_the_dictionary() -> None:
    raw = f.encode_syn_stream(HeaderCompressor(), 1, {"streamtype": "error"}, associated_id=0, priority=3, slot=2)
    first, flags_length = struct.unpack_from(">II", raw)
    assert first == 0x80030001 and flags_length == len(raw) - 8
    assert raw[8:16] == bytes.fromhex("00000001 00000000") and raw[16:18] == bytes([3 << 5, 2])
    cmf, flg = raw[18], raw[19]
    assert cmf & 0x0F == 8 and flg & 0x20, "deflate with FDICT"
    assert struct.unpack_from(">I", raw, 20)[0] == zlib.adler32(f.SPDY3_DICTIONARY)
    assert raw.endswith(b"\x00\x00\xff\xff"), "each block is sync-flushed"


@pytest.mark.parametrize("frame", FRAMES, ids=lambda fr: type(fr).__name__)
def test_round_trip(frame: f.Frame) -> None:
    assert FrameParser().feed(encode_all([frame])) == [frame]


def test_round_trip_all_in_one_stream() -> None:
    assert f.parse_frames(encode_all(FRAMES)) == FRAMES


def test_header_blocks_share_one_zlib_context() -> None:
    compressor = HeaderCompressor()
    headers = {"streamtype": "data", "port": "8080", "requestid": "0"}
    first = f.encode_syn_stream(compressor, 1, headers)
    second = f.encode_syn_stream(compressor, 3, headers)
    assert len(second) < len(first), "the second block refers back into the first"
    expected = {k: [v] for k, v in headers.items()}
    assert FrameParser().feed(first + second) == [SynStream(1, expected), SynStream(3, expected)]
    with pytest.raises(ProtocolError, match="inflate"):
        FrameParser().feed(second)


def test_blocks_from_another_compression_level_decode() -> None:
    compressor = HeaderCompressor(level=9)  # spdystream uses zlib.BestCompression
    data = b"".join(f.encode_syn_reply(compressor, i, {"n": str(i)}) for i in (1, 3, 5))
    assert f.parse_frames(data) == [SynReply(i, {"n": [str(i)]}) for i in (1, 3, 5)]


def test_every_split_point() -> None:
    data = encode_all(FRAMES[:14])  # all but the large data frames
    for i in range(len(data) + 1):
        parser = FrameParser()
        assert parser.feed(data[:i]) + parser.feed(data[i:]) == FRAMES[:14], i
        parser.close()


def test_byte_at_a_time() -> None:
    data = encode_all(FRAMES)
    parser = FrameParser()
    frames = [frame for i in range(len(data)) for frame in parser.feed(data[i : i + 1])]
    assert frames == FRAMES and parser.buffered == 0


def test_a_capture_read_from_a_file(tmp_path: Path) -> None:
    capture = tmp_path / "client-to-server.bin"
    capture.write_bytes(encode_all(FRAMES))
    assert f.parse_frames(capture.read_bytes()) == FRAMES


def test_truncated_stream() -> None:
    data = encode_all([Ping(1), Data(1, b"abc")])
    parser = FrameParser()
    assert parser.feed(data[:-1]) == [Ping(1)]
    assert parser.buffered == 10
    with pytest.raises(ProtocolError, match="inside a frame"):
        parser.close()


def test_header_values() -> None:
    block = f.encode_header_block({"Stream-Type": ["a", "b"], "x": "", "bytes": "\udcff\u00e9"})
    assert f.decode_header_block(block) == {"stream-type": ["a", "b"], "x": [""], "bytes": ["\udcff\u00e9"]}
    assert block[4:8] == b"\x00\x00\x00\x0b" and block[8:19] == b"stream-type" and block[23:26] == b"a\0b"
    # repeated and upper-case names from a lax peer are merged, not refused
    raw = struct.pack(">I", 2) + b"".join(
        struct.pack(">I", 1) + n + struct.pack(">I", 1) + v for n, v in ((b"A", b"1"), (b"a", b"2"))
    )
    assert f.decode_header_block(raw) == {"a": ["1", "2"]}
    with pytest.raises(ValueError):
        f.encode_header_block({"": "x"})


def test_oversized_frames_refused_from_their_header() -> None:
    parser = FrameParser(max_data_length=1024)
    with pytest.raises(ProtocolError, match="data frame of 1025 bytes"):
        parser.feed(struct.pack(">II", 1, 1025))  # refused before the payload is buffered
    with pytest.raises(ProtocolError, match="failed earlier"):
        parser.feed(b"")
    parser = FrameParser(max_control_length=100)
    with pytest.raises(ProtocolError, match="control frame of 101 bytes"):
        parser.feed(struct.pack(">II", 0x80030001, 101))
    assert len(FrameParser().feed(f.encode_data(1, b"x" * f.MAX_LENGTH))[0].data) == f.MAX_LENGTH  # type: ignore[union-attr]


def test_zlib_bomb_refused() -> None:
    frame = f.encode_syn_stream(HeaderCompressor(), 1, {"bomb": "a" * (4 << 20)})
    assert len(frame) < 16 * 1024
    with pytest.raises(ProtocolError, match="inflates past 65536"):
        FrameParser().feed(frame)


def test_header_block_size_bound_is_exact() -> None:
    headers = {"k": "v" * 100}
    size = len(f.encode_header_block(headers))
    frame = f.encode_syn_stream(HeaderCompressor(), 1, headers)
    assert FrameParser(max_header_block=size).feed(frame)[0] == SynStream(1, {"k": ["v" * 100]})
    with pytest.raises(ProtocolError, match="inflates past"):
        FrameParser(max_header_block=size - 1).feed(frame)


def _control(frame_type: int, payload: bytes, version: int = 3, flags: int = 0) -> bytes:
    return struct.pack(">II", 0x80000000 | version << 16 | frame_type, flags << 24 | len(payload)) + payload


def _zblock(block: bytes) -> bytes:
    z = zlib.compressobj(zdict=f.SPDY3_DICTIONARY)
    return z.compress(block) + z.flush(zlib.Z_SYNC_FLUSH)


GARBAGE = {
    "spdy/2": _control(f.PING, b"\0\0\0\1", version=2),
    "data on stream 0": struct.pack(">II", 0, 1) + b"x",
    "rst length": _control(f.RST_STREAM, b"\0\0\0\1"),
    "rst stream 0": _control(f.RST_STREAM, struct.pack(">II", 0, 1)),
    "settings count": _control(f.SETTINGS, struct.pack(">I", 2) + b"\0" * 8),
    "ping length": _control(f.PING, b"\0\0\0\0\0"),
    "goaway spdy/2 length": _control(f.GOAWAY, b"\0\0\0\1"),
    "window update length": _control(f.WINDOW_UPDATE, b"\0\0\0\1"),
    "syn_stream short": _control(f.SYN_STREAM, b"\0" * 9),
    "syn_stream stream 0": _control(f.SYN_STREAM, b"\0" * 10 + _zblock(b"\0\0\0\0")),
    "syn_reply short": _control(f.SYN_REPLY, b"\0\0\1"),
    "not zlib": _control(f.SYN_REPLY, b"\0\0\0\1" + b"garbage!"),
    "pairs beyond the block": _control(f.SYN_REPLY, b"\0\0\0\1" + _zblock(struct.pack(">I", 5))),
    "truncated pair": _control(f.SYN_REPLY, b"\0\0\0\1" + _zblock(struct.pack(">III", 1, 10, 0) + b"abc")),
    "stray bytes": _control(f.SYN_REPLY, b"\0\0\0\1" + _zblock(struct.pack(">I", 0) + b"x")),
    "empty name": _control(f.SYN_REPLY, b"\0\0\0\1" + _zblock(struct.pack(">III", 1, 0, 0))),
    "ended zlib stream": _control(f.SYN_REPLY, b"\0\0\0\1" + zlib.compress(b"\0\0\0\0")),
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        f.parse_frames(data)


def test_unknown_control_types_are_skipped() -> None:
    data = _control(10, b"credential") + f.encode_ping(3) + _control(0x7FFF, b"")
    assert f.parse_frames(data) == [Ping(3)]


def test_reserved_bits_of_stream_ids_are_ignored() -> None:
    data = _control(f.RST_STREAM, struct.pack(">II", 0x80000005, 5)) + _control(
        f.WINDOW_UPDATE, struct.pack(">II", 0x80000001, 0x80000010)
    )
    assert f.parse_frames(data) == [RstStream(5, 5), WindowUpdate(1, 16)]


def test_encoders_refuse_bad_ids_and_sizes() -> None:
    with pytest.raises(ValueError):
        f.encode_data(0, b"x")
    with pytest.raises(ValueError):
        f.encode_data(1, b"x" * (f.MAX_LENGTH + 1))
    with pytest.raises(ValueError):
        f.encode_rst_stream(1 << 31, 1)
