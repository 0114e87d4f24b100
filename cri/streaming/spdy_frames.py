"""SPDY/3.1 framing, sans-IO: frame dataclasses, an incremental parser, encoders.

Header blocks (SYN_STREAM, SYN_REPLY, HEADERS) are compressed with one zlib
stream per direction, seeded with the SPDY/3 dictionary and sync-flushed after
each block: a block decodes only with the context of every block before it, so
a `FrameParser` must see a connection's bytes in order, and one
`HeaderCompressor` must encode all the frames one side sends, in send order.

A `ProtocolError` leaves the parser unusable (its zlib context may be out of
step with the peer's); the caller ends the session.
"""

import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

VERSION = 3

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02  # SYN_STREAM only: the receiver may not send
FLAG_CLEAR_SETTINGS = 0x01  # SETTINGS only

MAX_LENGTH = 0xFFFFFF  # the 24-bit length field's own limit (16 MiB - 1)
DEFAULT_MAX_CONTROL_LENGTH = 256 * 1024
DEFAULT_MAX_HEADER_BLOCK = 64 * 1024  # decompressed: refuses zlib bombs


class RstStatus(IntEnum):
    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(IntEnum):
    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class ProtocolError(Exception):
    """The peer's bytes are not SPDY/3.1 this parser accepts; the session must end."""


# The SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1, as in
# moby/spdystream spdy/dictionary.go): length-prefixed words, then raw text.
_DICTIONARY_WORDS = (
    "options", "head", "post", "put", "delete", "trace", "accept", "accept-charset", "accept-encoding",
    "accept-language", "accept-ranges", "age", "allow", "authorization", "cache-control", "connection",
    "content-base", "content-encoding", "content-language", "content-length", "content-location", "content-md5",
    "content-range", "content-type", "date", "etag", "expect", "expires", "from", "host", "if-match",
    "if-modified-since", "if-none-match", "if-range", "if-unmodified-since", "last-modified", "location",
    "max-forwards", "pragma", "proxy-authenticate", "proxy-authorization", "range", "referer", "retry-after",
    "server", "te", "trailer", "transfer-encoding", "upgrade", "user-agent", "vary", "via", "warning",
    "www-authenticate", "method", "get", "status", "200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie",
    "keep-alive", "origin",
)  # fmt: skip
_DICTIONARY_TAIL = (
    b"100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    b"203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    b"403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    b"Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    b"chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    b"text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
SPDY3_DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _DICTIONARY_WORDS) + _DICTIONARY_TAIL

Headers = dict[str, list[str]]
"""Lower-case name -> values (SPDY carries several values NUL-separated)."""
HeaderInput = Mapping[str, str | Sequence[str]]


class _Fin:
    """A frame's FIN flag: the sender's last frame on the stream."""

    __slots__ = ()
    flags: int

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True, slots=True)
class SynStream(_Fin):
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_id: int = 0
    priority: int = 0  # 0 (highest) .. 7
    slot: int = 0
    flags: int = 0

    @property
    def unidirectional(self) -> bool:
        return bool(self.flags & FLAG_UNIDIRECTIONAL)


@dataclass(frozen=True, slots=True)
class _HeaderBlock(_Fin):
    """A stream's headers after its SYN_STREAM: a SYN_REPLY or a HEADERS frame."""

    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0


@dataclass(frozen=True, slots=True)
class SynReply(_HeaderBlock):
    pass


@dataclass(frozen=True, slots=True)
class HeadersFrame(_HeaderBlock):
    pass


@dataclass(frozen=True, slots=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Setting:
    id: int  # 24 bits
    value: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Settings:
    entries: tuple[Setting, ...] = ()
    flags: int = 0


@dataclass(frozen=True, slots=True)
class Ping:
    ping_id: int


@dataclass(frozen=True, slots=True)
class GoAway:
    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True, slots=True)
class Data(_Fin):
    stream_id: int
    data: bytes = b""
    flags: int = 0


Frame = SynStream | SynReply | HeadersFrame | RstStream | Settings | Ping | GoAway | WindowUpdate | Data

_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")
_HEADER = struct.Struct(">II")  # first word, flags<<24 | length
_SYN_STREAM = struct.Struct(">IIBB")


def _text(raw: bytes) -> str:
    # surrogateescape: any byte survives a decode/encode round trip
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def encode_header_block(headers: HeaderInput) -> bytes:
    """The uncompressed SPDY/3 name/value block: 32-bit count, then length-prefixed names and values."""
    parts = [_U32.pack(len(headers))]
    for name, values in headers.items():
        raw_name = _raw(name.lower())
        if not raw_name:
            raise ValueError("empty header name")
        raw_value = _raw(values if isinstance(values, str) else "\0".join(values))
        parts += (_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value)
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Parse an uncompressed name/value block; names are lower-cased, repeated names merged."""
    try:
        (count,) = _U32.unpack_from(block, 0)
        if count > len(block) // 8:  # every pair takes at least two 4-byte lengths
            raise ProtocolError(f"header block claims {count} pairs in {len(block)} bytes")
        headers: Headers = {}
        offset = 4
        for _ in range(count):
            (n,) = _U32.unpack_from(block, offset)
            name = block[offset + 4 : offset + 4 + n]
            offset += 4 + n
            (v,) = _U32.unpack_from(block, offset)
            value = block[offset + 4 : offset + 4 + v]
            offset += 4 + v
            if len(name) != n or len(value) != v:
                raise ProtocolError("header block truncated")
            if not name:
                raise ProtocolError("empty header name")
            headers.setdefault(_text(name).lower(), []).extend(_text(value).split("\0"))
    except struct.error as e:
        raise ProtocolError("header block truncated") from e
    if offset != len(block):
        raise ProtocolError(f"{len(block) - offset} stray bytes after the header block")
    return headers


class HeaderCompressor:
    """The sending side's zlib stream: one per connection direction, blocks in send order."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._z = zlib.compressobj(level, zdict=SPDY3_DICTIONARY)

    def compress(self, headers: HeaderInput) -> bytes:
        block = encode_header_block(headers)
        return self._z.compress(block) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The receiving side's zlib stream, with a bound on each decompressed block."""

    def __init__(self, max_block: int = DEFAULT_MAX_HEADER_BLOCK) -> None:
        self._z = zlib.decompressobj(zdict=SPDY3_DICTIONARY)
        self._max = max_block

    def decompress(self, data: bytes) -> Headers:
        try:
            # one byte over the bound tells "too big" from "exactly the bound"
            block = self._z.decompress(data, self._max + 1)
        except zlib.error as e:
            raise ProtocolError(f"header block does not inflate: {e}") from e
        if len(block) > self._max:
            raise ProtocolError(f"header block inflates past {self._max} bytes")
        if self._z.eof:
            raise ProtocolError("peer ended its header compression stream")
        return decode_header_block(block)


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"control frame payload of {len(payload)} bytes")
    return _HEADER.pack(0x80000000 | VERSION << 16 | frame_type, flags << 24 | len(payload)) + payload


def _stream_id(stream_id: int) -> int:
    if not 0 < stream_id <= 0x7FFFFFFF:
        raise ValueError(f"stream id {stream_id} out of range")
    return stream_id


def encode_data(stream_id: int, data: bytes = b"", *, fin: bool = False) -> bytes:
    if len(data) > MAX_LENGTH:
        raise ValueError(f"data frame of {len(data)} bytes")
    return _HEADER.pack(_stream_id(stream_id), (FLAG_FIN if fin else 0) << 24 | len(data)) + bytes(data)


def encode_syn_stream(
    compressor: HeaderCompressor,
    stream_id: int,
    headers: HeaderInput,
    *,
    associated_id: int = 0,
    priority: int = 0,
    slot: int = 0,
    flags: int = 0,
) -> bytes:
    fixed = _SYN_STREAM.pack(_stream_id(stream_id), associated_id & 0x7FFFFFFF, (priority & 7) << 5, slot)
    return _control(SYN_STREAM, flags, fixed + compressor.compress(headers))


def encode_syn_reply(compressor: HeaderCompressor, stream_id: int, headers: HeaderInput, *, flags: int = 0) -> bytes:
    return _control(SYN_REPLY, flags, _U32.pack(_stream_id(stream_id)) + compressor.compress(headers))


def encode_headers(compressor: HeaderCompressor, stream_id: int, headers: HeaderInput, *, flags: int = 0) -> bytes:
    return _control(HEADERS, flags, _U32.pack(_stream_id(stream_id)) + compressor.compress(headers))


def encode_rst_stream(stream_id: int, status: int) -> bytes:
    return _control(RST_STREAM, 0, _U32x2.pack(_stream_id(stream_id), status))


def encode_settings(entries: Iterable[Setting] = (), *, flags: int = 0) -> bytes:
    items = list(entries)
    body = b"".join(_U32x2.pack((s.flags & 0xFF) << 24 | (s.id & 0xFFFFFF), s.value) for s in items)
    return _control(SETTINGS, flags, _U32.pack(len(items)) + body)


def encode_ping(ping_id: int) -> bytes:
    return _control(PING, 0, _U32.pack(ping_id))


def encode_goaway(last_good_stream_id: int, status: int = GoAwayStatus.OK) -> bytes:
    return _control(GOAWAY, 0, _U32x2.pack(last_good_stream_id & 0x7FFFFFFF, status))


def encode_window_update(stream_id: int, delta: int) -> bytes:
    return _control(WINDOW_UPDATE, 0, _U32x2.pack(stream_id & 0x7FFFFFFF, delta & 0x7FFFFFFF))


def encode_frame(frame: Frame, compressor: HeaderCompressor) -> bytes:
    """Any frame's bytes; header-bearing frames advance ``compressor``."""
    match frame:
        case Data():
            return encode_data(frame.stream_id, frame.data, fin=frame.fin)
        case SynStream():
            return encode_syn_stream(
                compressor,
                frame.stream_id,
                frame.headers,
                associated_id=frame.associated_id,
                priority=frame.priority,
                slot=frame.slot,
                flags=frame.flags,
            )
        case SynReply():
            return encode_syn_reply(compressor, frame.stream_id, frame.headers, flags=frame.flags)
        case HeadersFrame():
            return encode_headers(compressor, frame.stream_id, frame.headers, flags=frame.flags)
        case RstStream():
            return encode_rst_stream(frame.stream_id, frame.status)
        case Settings():
            return encode_settings(frame.entries, flags=frame.flags)
        case Ping():
            return encode_ping(frame.ping_id)
        case GoAway():
            return encode_goaway(frame.last_good_stream_id, frame.status)
        case WindowUpdate():
            return encode_window_update(frame.stream_id, frame.delta)


class FrameParser:
    """Incremental parser for one direction of a connection: feed bytes in any pieces, get whole frames.

    Frame lengths are checked as soon as a frame's 8-byte header arrives, so a
    huge announced length is refused before its payload is buffered. Control
    frames of unknown types are skipped, as SPDY/3 asks.
    """

    def __init__(
        self,
        *,
        max_data_length: int = MAX_LENGTH,
        max_control_length: int = DEFAULT_MAX_CONTROL_LENGTH,
        max_header_block: int = DEFAULT_MAX_HEADER_BLOCK,
    ) -> None:
        self._buf = bytearray()
        self._max_data = max_data_length
        self._max_control = max_control_length
        self._headers = HeaderDecompressor(max_header_block)
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held that do not make a whole frame yet."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        """Add ``data``; return every frame it completes, in order."""
        if self._failed is not None:
            raise ProtocolError(f"parser failed earlier: {self._failed}")
        self._buf += data
        frames: list[Frame] = []
        try:
            while (frame := self._next()) is not None:
                if not isinstance(frame, _Skipped):
                    frames.append(frame)
        except ProtocolError as e:
            self._failed = e
            raise
        return frames

    def close(self) -> None:
        """End of input: a partial frame left over is a truncated stream."""
        if self._buf:
            raise ProtocolError(f"connection ended inside a frame ({len(self._buf)} bytes buffered)")

    def _next(self) -> "Frame | _Skipped | None":
        if len(self._buf) < 8:
            return None
        first, flags_length = _HEADER.unpack_from(self._buf, 0)
        flags, length = flags_length >> 24, flags_length & 0xFFFFFF
        control = bool(first & 0x80000000)
        limit = self._max_control if control else self._max_data
        if length > limit:
            kind = "control" if control else "data"
            raise ProtocolError(f"{kind} frame of {length} bytes exceeds the limit of {limit}")
        if len(self._buf) < 8 + length:
            return None
        payload = bytes(self._buf[8 : 8 + length])
        del self._buf[: 8 + length]
        if not control:
            if first == 0:
                raise ProtocolError("data frame on stream 0")
            return Data(first, payload, flags)
        version, frame_type = (first >> 16) & 0x7FFF, first & 0xFFFF
        if version != VERSION:
            raise ProtocolError(f"SPDY version {version}, only {VERSION} is spoken")
        return self._control(frame_type, flags, payload)

    def _control(self, frame_type: int, flags: int, p: bytes) -> "Frame | _Skipped":
        n = len(p)
        if frame_type == SYN_STREAM:
            _need(n >= 10, "SYN_STREAM shorter than 10 bytes")
            sid, assoc, prio, slot = _SYN_STREAM.unpack_from(p, 0)
            sid, assoc = sid & 0x7FFFFFFF, assoc & 0x7FFFFFFF
            _need(sid != 0, "SYN_STREAM for stream 0")
            return SynStream(sid, self._headers.decompress(p[10:]), assoc, prio >> 5, slot, flags)
        if frame_type in (SYN_REPLY, HEADERS):
            _need(n >= 4, "SYN_REPLY/HEADERS shorter than 4 bytes")
            sid = _U32.unpack_from(p, 0)[0] & 0x7FFFFFFF
            _need(sid != 0, "SYN_REPLY/HEADERS for stream 0")
            headers = self._headers.decompress(p[4:])
            return SynReply(sid, headers, flags) if frame_type == SYN_REPLY else HeadersFrame(sid, headers, flags)
        if frame_type == RST_STREAM:
            _need(n == 8, f"RST_STREAM of {n} bytes")
            sid, status = _U32x2.unpack(p)
            _need(sid & 0x7FFFFFFF != 0, "RST_STREAM for stream 0")
            return RstStream(sid & 0x7FFFFFFF, status)
        if frame_type == SETTINGS:
            _need(n >= 4, "SETTINGS shorter than 4 bytes")
            (count,) = _U32.unpack_from(p, 0)
            _need(n == 4 + 8 * count, f"SETTINGS of {n} bytes for {count} entries")
            pairs = (_U32x2.unpack_from(p, 4 + 8 * i) for i in range(count))
            return Settings(tuple(Setting(fid & 0xFFFFFF, value, fid >> 24) for fid, value in pairs), flags)
        if frame_type == PING:
            _need(n == 4, f"PING of {n} bytes")
            return Ping(_U32.unpack(p)[0])
        if frame_type == GOAWAY:
            _need(n == 8, f"GOAWAY of {n} bytes")
            last, status = _U32x2.unpack(p)
            return GoAway(last & 0x7FFFFFFF, status)
        if frame_type == WINDOW_UPDATE:
            _need(n == 8, f"WINDOW_UPDATE of {n} bytes")
            sid, delta = _U32x2.unpack(p)
            return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return _Skipped()


class _Skipped:
    """A control frame of a type SPDY/3 says to ignore (e.g. CREDENTIAL)."""


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ProtocolError(message)


def parse_frames(data: bytes, **limits: int) -> list[Frame]:
    """Every frame of one direction's whole byte stream (e.g. a capture read from a file)."""
    parser = FrameParser(**limits)
    frames = parser.feed(data)
    parser.close()
    return frames
