"""Hostile CRI requests, as a fuzzer or a buggy client sends them.

Two kinds, both from a seeded ``random.Random`` so a failure can be replayed:
bodies of random bytes (mostly not valid protobuf), and well-formed messages
of each RPC's request type whose every field holds a hostile value: empty,
70,000 characters, NUL bytes, ``../`` paths, unknown enum numbers, negative
and huge numbers, deep nesting, many map entries.
"""

import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from google.protobuf.message import Message

from cri.api.v1 import api_pb2 as pb

HOSTILE_STRINGS = (
    "",
    "x" * 70_000,
    "a\x00b",
    "../../../../etc/passwd",
    "/",
    "/proc/self/root/etc/shadow",
    " ",
    "-",
    "\n\r\t",
    "sha256:",
    "sha256:" + "0" * 64,
    "A" * 300,
    "é✓💥",
    "%00%2e%2e",
    "$(reboot)",
    "127.0.0.1:1/x:y",
    "docker.io/library/busybox:latest",
)
INT32 = (0, 1, -1, -(2**31), 2**31 - 1)
INT64 = (*INT32, 2**63 - 1, -(2**63))
UINT32 = (0, 1, 2**32 - 1)
UINT64 = (0, 1, 2**64 - 1, 2**63)
_INTS = {
    FieldDescriptor.TYPE_INT32: INT32,
    FieldDescriptor.TYPE_SINT32: INT32,
    FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64,
    FieldDescriptor.TYPE_SINT64: INT64,
    FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: UINT32,
    FieldDescriptor.TYPE_FIXED32: UINT32,
    FieldDescriptor.TYPE_UINT64: UINT64,
    FieldDescriptor.TYPE_FIXED64: UINT64,
}
MAX_DEPTH = 4


@dataclass(frozen=True)
class Rpc:
    service: str  # "RuntimeService" or "ImageService"
    name: str
    request: type[Message]
    streaming: bool  # server streaming

    @property
    def path(self) -> str:
        return f"/runtime.v1.{self.service}/{self.name}"


def rpcs() -> list[Rpc]:
    out = []
    for service in ("RuntimeService", "ImageService"):
        for m in pb.DESCRIPTOR.services_by_name[service].methods:
            out.append(Rpc(service, m.name, _message_class(m), m.server_streaming))
    return out


def _message_class(m: MethodDescriptor) -> type[Message]:
    cls: type[Message] = getattr(pb, m.input_type.name)
    return cls


def random_body(rng: random.Random) -> bytes:
    """Random bytes, sometimes starting like a protobuf field to get further into the parser."""
    body = rng.randbytes(rng.choice((1, 2, 7, 64, 500)))
    if rng.random() < 0.3:
        body = bytes([0x0A, 0xFF, 0xFF, 0xFF, 0x0F]) + body  # field 1, length-delimited, a huge length
    return body


def hostile_message(cls: type[Message], rng: random.Random) -> Message:
    msg = cls()
    _fill(msg, rng, 0)
    return msg


def _fill(msg: Message, rng: random.Random, depth: int) -> None:
    for field in msg.DESCRIPTOR.fields:
        if rng.random() < 0.25:
            continue  # leave some fields unset
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            target = getattr(msg, field.name)
            value_field = field.message_type.fields_by_name["value"]
            for _ in range(rng.choice((1, 2, 40))):
                key = rng.choice(HOSTILE_STRINGS)[:200] + str(rng.random())
                if value_field.message_type is not None:
                    if depth < MAX_DEPTH:
                        _fill(target[key], rng, depth + 1)
                else:
                    target[key] = _scalar(value_field, rng)
        elif field.is_repeated:
            items = getattr(msg, field.name)
            for _ in range(rng.choice((1, 2, 3))):
                if field.message_type is not None:
                    if depth < MAX_DEPTH:
                        _fill(items.add(), rng, depth + 1)
                else:
                    items.append(_scalar(field, rng))
        elif field.message_type is not None:
            if depth < MAX_DEPTH:
                _fill(getattr(msg, field.name), rng, depth + 1)
        else:
            setattr(msg, field.name, _scalar(field, rng))


def _scalar(field: Any, rng: random.Random) -> object:  # a FieldDescriptor (upb's or the Python one)
    t = field.type
    if t == FieldDescriptor.TYPE_STRING:
        return rng.choice(HOSTILE_STRINGS)
    if t == FieldDescriptor.TYPE_BYTES:
        return rng.choice((b"", b"\x00" * 10, rng.randbytes(100), b"x" * 70_000))
    if t == FieldDescriptor.TYPE_BOOL:
        return rng.random() < 0.5
    if t == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values] if field.enum_type is not None else []
        return rng.choice([*known, 99, -5, 2**31 - 1])  # proto3 enums are open: unknown numbers parse
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return rng.choice((0.0, -1.0, 1e308, float("nan"), float("inf")))
    return rng.choice(_INTS[t])


def requests(seed: int, per_rpc: int) -> Iterator[tuple[Rpc, bytes, str]]:
    """(rpc, serialized body, what it is) for every RPC, ``per_rpc`` of each kind."""
    rng = random.Random(seed)
    for rpc in rpcs():
        for i in range(per_rpc):
            yield rpc, random_body(rng), f"random bytes #{i}"
            yield rpc, hostile_message(rpc.request, rng).SerializeToString(), f"hostile message #{i}"
        yield rpc, rpc.request().SerializeToString(), "empty message"
