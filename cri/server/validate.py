"""Request validation at the servicer edge, for every RPC, before the domain.

Three generic rules walk the whole request: no string may hold a NUL byte
(it would reach a syscall, a path or a command line as something else), no
string may exceed its field kind's size, and an enum may only hold a value
the proto defines. Field kinds are told by name: ids, metadata names,
hostnames, paths, sysctl keys. The domain keeps its own checks of what only
it knows (does the pod exist, is the sysctl namespaced). Every message names
the field and quotes the value truncated (cri.errors.quote).
"""

import re
from collections.abc import Mapping
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from cri.errors import InvalidArgument, quote

MAX_ID = 256  # crid's ids are 64 hex digits; clients may send a prefix
MAX_NAME = 253  # a DNS subdomain: Kubernetes' longest object name
MAX_PATH = 4096  # PATH_MAX
MAX_STRING = 1 << 20  # anything else (an environment value, an annotation, an argument)
HOST_NAME_MAX = 64
MAX_ITEMS = 100_000  # entries of one repeated field or map

_ID_FIELDS = frozenset({"container_id", "pod_sandbox_id", "id", "target_id", "image_ref", "pod_sandbox_id_prefix"})
_NAME_FIELDS = {"PodSandboxMetadata": {"name", "namespace", "uid"}, "ContainerMetadata": {"name"}}
_PATH_FIELDS = frozenset(
    {"log_directory", "log_path", "container_path", "host_path", "path", "cgroup_parent", "localhost_ref",
     "image_sub_path", "location"}
)  # fmt: skip
# RFC 1123: labels of letters, digits and hyphens, dot-separated, as Kubernetes validates pod hostnames
_HOSTNAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$", re.IGNORECASE)
_SYSCTL = re.compile(r"^[a-z0-9_]([a-z0-9_.\-/]*[a-z0-9_])?$")


def validate(request: Message) -> None:
    """Raise InvalidArgument naming the first field that breaks a rule."""
    _walk(request, "")


def _walk(msg: Message, prefix: str) -> None:
    owner = msg.DESCRIPTOR.name
    for field, value in msg.ListFields():
        path = f"{prefix}{field.name}"
        # a map's value is a Mapping: the field's options would say so too, but reading them imports
        # descriptor_pb2 (0.5 MiB that stays) and builds an options message for every field of every call
        if field.message_type is not None and isinstance(value, Mapping):
            if len(value) > MAX_ITEMS:
                raise InvalidArgument(f"{path} has {len(value)} entries (at most {MAX_ITEMS})")
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                _string(f"{path} key", key, _map_key_limit(path), owner)
                if field.name == "sysctls" and not _SYSCTL.match(key):
                    raise InvalidArgument(f"{path}: {quote(key)} is not a sysctl name")
                _one(value_field, item, f"{path}[{quote(key, 40)}]", owner)
        elif field.is_repeated:
            if len(value) > MAX_ITEMS:
                raise InvalidArgument(f"{path} has {len(value)} items (at most {MAX_ITEMS})")
            for i, item in enumerate(value):
                _one(field, item, f"{path}[{i}]", owner)
        else:
            _one(field, value, path, owner)


def _one(field: Any, value: Any, path: str, owner: str) -> None:
    if field.message_type is not None:
        _walk(value, f"{path}.")
    elif field.type == FieldDescriptor.TYPE_STRING:
        _string(path, value, _limit(field.name, owner), owner)
        if field.name == "hostname" and value:
            _hostname(path, value)
    elif field.type == FieldDescriptor.TYPE_BYTES:
        if len(value) > MAX_STRING:
            raise InvalidArgument(f"{path} is {len(value)} bytes (at most {MAX_STRING})")
    elif field.type == FieldDescriptor.TYPE_ENUM and value not in field.enum_type.values_by_number:
        known = ", ".join(v.name for v in field.enum_type.values)
        raise InvalidArgument(f"{path} has the unknown value {value} (known: {known})")


def _limit(name: str, owner: str) -> int:
    if name in _ID_FIELDS:
        return MAX_ID
    if name in _NAME_FIELDS.get(owner, ()):
        return MAX_NAME
    if name in _PATH_FIELDS:
        return MAX_PATH
    return MAX_STRING


def _map_key_limit(path: str) -> int:
    return MAX_PATH if path.endswith("sysctls") else MAX_STRING


def _string(path: str, value: str, limit: int, owner: str) -> None:
    if "\x00" in value:
        raise InvalidArgument(f"{path} contains a NUL byte: {quote(value)}")
    if len(value) > limit:
        raise InvalidArgument(f"{path} is {len(value)} characters long (at most {limit}): {quote(value)}")


def _hostname(path: str, value: str) -> None:
    if len(value.encode()) > HOST_NAME_MAX:
        raise InvalidArgument(f"{path} {quote(value)} is longer than {HOST_NAME_MAX} bytes")
    if not _HOSTNAME.match(value):
        raise InvalidArgument(f"{path} {quote(value)} is not a valid hostname (RFC 1123: letters, digits, '-', '.')")
