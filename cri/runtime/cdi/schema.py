"""CDI spec files: their schema, parsing and validation.

The rules are the CDI library's (tags.cncf.io/container-device-interface:
specs-go, pkg/cdi spec.go, device.go, container-edits.go, pkg/parser) that
containerd and CRI-O use: unknown fields are refused (its strict decoding), the
cdiVersion must be known and new enough for the fields the file uses, kind,
device names and every edit are checked, and the messages are its messages.
"""

import json
import os
import re
from typing import Annotated, Any

import msgspec
from msgspec import Meta, field

U32 = Annotated[int, Meta(ge=0, le=2**32 - 1)]
I64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]


class _Strict(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True, omit_defaults=True):
    """Decoded strictly (msgspec.convert): unknown fields and wrong types are refused."""


class DeviceNode(_Strict, frozen=True):
    path: str = ""
    hostPath: str = ""
    type: str = ""
    major: I64 = 0
    minor: I64 = 0
    fileMode: U32 | None = None
    permissions: str = ""
    uid: U32 | None = None
    gid: U32 | None = None


class Mount(_Strict, frozen=True):
    hostPath: str = ""
    containerPath: str = ""
    options: list[str] = []
    type: str = ""


class Hook(_Strict, frozen=True):
    hookName: str = ""
    path: str = ""
    args: list[str] = []
    env: list[str] = []
    timeout: int | None = None


class IntelRdt(_Strict, frozen=True):
    closID: str = ""
    l3CacheSchema: str = ""
    memBwSchema: str = ""
    schemata: list[str] | None = None
    enableMonitoring: bool = False


class NetDevice(_Strict, frozen=True):
    hostInterfaceName: str = ""
    name: str = ""


class ContainerEdits(_Strict, frozen=True):
    env: list[str] = []
    deviceNodes: list[DeviceNode] = []
    netDevices: list[NetDevice] = []
    hooks: list[Hook] = []
    mounts: list[Mount] = []
    intelRdt: IntelRdt | None = None
    additionalGids: list[U32] = []

    def empty(self) -> bool:
        return not (
            self.env
            or self.deviceNodes
            or self.netDevices
            or self.hooks
            or self.mounts
            or self.additionalGids
            or self.intelRdt is not None
        )


class Device(_Strict, frozen=True):
    name: str = ""
    annotations: dict[str, str] = {}
    containerEdits: ContainerEdits = field(default_factory=ContainerEdits)


class Spec(_Strict, frozen=True):
    cdiVersion: str = ""
    kind: str = ""
    annotations: dict[str, str] = {}
    devices: list[Device] = []
    containerEdits: ContainerEdits = field(default_factory=ContainerEdits)

    @property
    def vendor(self) -> str:
        return parse_qualifier(self.kind)[0]

    @property
    def cls(self) -> str:
        return parse_qualifier(self.kind)[1]


class SpecError(Exception):
    """A spec file that cannot be used; the message is the CDI library's."""


# --- names (pkg/parser) -----------------------------------------------------------

_ALNUM = re.compile(r"[A-Za-z0-9]")


def parse_qualifier(kind: str) -> tuple[str, str]:
    """``vendor/class`` -> (vendor, class); ("", kind) when it is not of that form."""
    vendor, sep, cls = kind.partition("/")
    if not sep or not vendor or not cls:
        return "", kind
    return vendor, cls


def parse_device(device: str) -> tuple[str, str, str]:
    """``vendor/class=name`` -> its parts; ("", "", device) when it is not of that form."""
    if not device or device[0] == "/":
        return "", "", device
    qualifier, sep, name = device.partition("=")
    if not sep or not qualifier or not name:
        return "", "", device
    vendor, cls = parse_qualifier(qualifier)
    if not vendor:
        return "", "", device
    return vendor, cls, name


def _check_vendor_or_class(name: str) -> None:
    if not name:
        raise SpecError("empty name")
    if not name[0].isascii() or not name[0].isalpha():
        raise SpecError(f"{go_quote(name)}, should start with letter")
    for c in name[1:-1]:
        if not _ALNUM.fullmatch(c) and c not in "_-.":
            raise SpecError(f"invalid character '{c}' in name {go_quote(name)}")
    if len(name) > 1 and not _ALNUM.fullmatch(name[-1]):
        raise SpecError(f"{go_quote(name)}, should end with a letter or digit")


def check_vendor(vendor: str) -> None:
    try:
        _check_vendor_or_class(vendor)
    except SpecError as exc:
        raise SpecError(f"invalid vendor. {exc}") from None


def check_class(cls: str) -> None:
    try:
        _check_vendor_or_class(cls)
    except SpecError as exc:
        raise SpecError(f"invalid class. {exc}") from None


def check_device_name(name: str) -> None:
    if not name:
        raise SpecError("invalid (empty) device name")
    if not _ALNUM.fullmatch(name[0]):
        raise SpecError(f"invalid class {go_quote(name)}, should start with a letter or digit")
    for c in name[1:-1]:
        if not _ALNUM.fullmatch(c) and c not in "_-.:":
            raise SpecError(f"invalid character '{c}' in device name {go_quote(name)}")
    if len(name) > 1 and not _ALNUM.fullmatch(name[-1]):
        raise SpecError(f"invalid name {go_quote(name)}, should end with a letter or digit")


def check_qualified_name(device: str) -> None:
    """A fully qualified device name, ``vendor.com/class=name``, or SpecError saying what is wrong."""
    vendor, cls, name = parse_device(device)
    if not vendor:
        raise SpecError(f"unqualified device {go_quote(device)}, missing vendor")
    try:
        check_vendor(vendor)
        check_class(cls)
        check_device_name(name)
    except SpecError as exc:
        raise SpecError(f"invalid device {go_quote(device)}: {exc}") from None


def go_quote(value: str) -> str:
    """A string as Go's %q shows it (the library's messages use it)."""
    return json.dumps(value, ensure_ascii=False)


# --- versions (specs-go/version.go) -------------------------------------------------

# newest first; 0.1.0 and 0.2.0 are known but older than the earliest the library accepts
VERSIONS = ("1.1.0", "1.0.0", "0.8.0", "0.7.0", "0.6.0", "0.5.0", "0.4.0", "0.3.0", "0.2.0", "0.1.0")
EARLIEST = "0.3.0"


def _all_edits(spec: Spec) -> list[ContainerEdits]:
    return [spec.containerEdits, *(d.containerEdits for d in spec.devices)]


def required_version(spec: Spec) -> str:
    """The oldest cdiVersion that has every field the spec uses."""
    edits = _all_edits(spec)
    if any(e.netDevices or (e.intelRdt and (e.intelRdt.schemata is not None or e.intelRdt.enableMonitoring))
           for e in edits):  # fmt: skip
        return "1.1.0"
    if any(e.intelRdt is not None or e.additionalGids for e in edits):
        return "0.7.0"
    if spec.annotations or any(d.annotations for d in spec.devices) or "." in spec.kind.partition("/")[2]:
        return "0.6.0"
    if any(d.name[:1].isdigit() for d in spec.devices) or any(n.hostPath for e in edits for n in e.deviceNodes):
        return "0.5.0"
    if any(m.type for e in edits for m in e.mounts):
        return "0.4.0"
    return EARLIEST


def check_version(spec: Spec) -> None:
    version = spec.cdiVersion.removeprefix("v")
    if version not in VERSIONS:
        raise SpecError(f"invalid version {go_quote(spec.cdiVersion)}")
    needed = required_version(spec)
    if VERSIONS.index(needed) < VERSIONS.index(version):
        raise SpecError(f"the spec version must be at least v{needed}")


# --- edits (container-edits.go) ---------------------------------------------------

HOOK_NAMES = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def _check_env(env: list[str]) -> None:
    for v in env:
        if v.find("=") <= 0:
            raise SpecError(f"invalid environment variable {go_quote(v)}")


def _check_node(d: DeviceNode) -> None:
    if not d.path:
        raise SpecError("invalid (empty) device path")
    if d.type not in ("", "b", "c", "u", "p"):
        raise SpecError(f"device {go_quote(d.path)}: invalid type {go_quote(d.type)}")
    if d.permissions not in ("", "none") and d.permissions.strip("rwm"):
        raise SpecError(f"device {go_quote(d.path)}: invalid permissions {go_quote(d.permissions)}")


def _check_hook(h: Hook) -> None:
    if h.hookName not in HOOK_NAMES:
        raise SpecError(f"invalid hook name {go_quote(h.hookName)}")
    if not h.path:
        raise SpecError(f"invalid hook {go_quote(h.hookName)} with empty path")
    try:
        _check_env(h.env)
    except SpecError as exc:
        raise SpecError(f"invalid hook {go_quote(h.hookName)}: {exc}") from None


def _check_net_devices(devices: list[NetDevice]) -> None:
    hosts: dict[str, str] = {}
    names: dict[str, str] = {}
    for d in devices:
        if not d.hostInterfaceName:
            raise SpecError("invalid linux net device, empty HostInterfaceName")
        if not d.name:
            raise SpecError("invalid linux net device, empty Name")
        if d.hostInterfaceName in hosts:
            raise SpecError(
                f"invalid linux net device, duplicate HostInterfaceName {go_quote(d.hostInterfaceName)} "
                f"with names {go_quote(d.name)} and {go_quote(hosts[d.hostInterfaceName])}"
            )
        if d.name in names:
            raise SpecError(
                f"invalid linux net device, duplicate Name {go_quote(d.name)} "
                f"with HostInterfaceName {go_quote(d.hostInterfaceName)} and {go_quote(names[d.name])}"
            )
        hosts[d.hostInterfaceName], names[d.name] = d.name, d.hostInterfaceName


def check_edits(e: ContainerEdits) -> None:
    try:
        _check_env(e.env)
    except SpecError as exc:
        raise SpecError(f"invalid container edits: {exc}") from None
    for node in e.deviceNodes:
        _check_node(node)
    for hook in e.hooks:
        _check_hook(hook)
    for m in e.mounts:
        if not m.hostPath:
            raise SpecError("invalid mount, empty host path")
        if not m.containerPath:
            raise SpecError("invalid mount, empty container path")
    if e.intelRdt is not None:
        c = e.intelRdt.closID
        if c != "/" and (len(c) >= 4096 or c in (".", "..") or "/" in c or "\n" in c):
            raise SpecError("invalid ClosID")
    _check_net_devices(e.netDevices)


# --- whole specs (spec.go, device.go) -------------------------------------------------


def check_spec(spec: Spec) -> None:
    """The library's Spec.validate (its messages prefixed "invalid CDI Spec: " by the caller)."""
    check_version(spec)
    check_vendor(spec.vendor)
    check_class(spec.cls)
    check_edits(spec.containerEdits)
    seen: set[str] = set()
    for d in spec.devices:
        try:
            check_device_name(d.name)
            if d.containerEdits.empty():
                raise SpecError("invalid device, empty device edits")
            try:
                check_edits(d.containerEdits)
            except SpecError as exc:
                raise SpecError(f"invalid device {go_quote(d.name)}: {exc}") from None
        except SpecError as exc:
            raise SpecError(f"failed add device {go_quote(d.name)}: {exc}") from None
        if d.name in seen:
            raise SpecError(f"invalid spec, multiple device {go_quote(d.name)}")
        seen.add(d.name)
    if not seen:
        raise SpecError("invalid spec, no devices")


def _decode(path: str, data: bytes) -> Any:
    # The library decodes JSON and YAML alike (JSON is YAML); PyYAML, imported only when needed,
    # reads .yaml files and a .json file that is not plain JSON.
    if path.endswith(".json"):
        try:
            return json.loads(data)
        except ValueError:
            pass
    import yaml

    try:
        return yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise SpecError(f"failed to parse CDI Spec {go_quote(path)}: failed to unmarshal CDI Spec: {exc}") from None


def parse_spec(path: str, data: bytes) -> Spec:
    """A spec file's content -> a valid Spec, or SpecError with the library's message."""
    raw = _decode(path, data)
    if raw is None:
        raise SpecError(f"failed to parse CDI Spec {go_quote(path)}, no Spec data")
    if not isinstance(raw, dict):
        raise SpecError(f"failed to parse CDI Spec {go_quote(path)}: failed to unmarshal CDI Spec: not an object")
    try:
        spec = msgspec.convert(raw, Spec)
    except msgspec.ValidationError as exc:  # "Object contains unknown field `x` - at `$.devices[0]`"
        raise SpecError(f"failed to parse CDI Spec {go_quote(path)}: failed to unmarshal CDI Spec: {exc}") from None
    try:
        check_spec(spec)
    except SpecError as exc:
        raise SpecError(f"invalid CDI Spec: {exc}") from None
    return spec


def read_spec(path: str) -> Spec:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise SpecError(f"failed to read CDI Spec {go_quote(path)}: {exc.strerror or exc}") from None
    return parse_spec(os.path.normpath(path), data)
