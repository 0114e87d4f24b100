"""Seccomp for containers: which profile a CRI security context asks for, crid's
RuntimeDefault profile, and Localhost profile files.

The default profile lives in ``seccomp_default.json`` next to this module. It
was written for crid from the syscall lists of containerd's
contrib/seccomp DefaultProfile and moby's profiles/seccomp default (the two
agree): an allow-list with EPERM for everything else, a few argument filters
(socket without AF_ALG/AF_VSOCK, personality, clone without namespace flags)
and groups that only apply when the container holds a capability
(CAP_SYS_ADMIN: mount, unshare, sethostname, ...). It is kept in the
"docker" profile format that kubelet users also write by hand: ``archMap``
and per-rule ``includes`` / ``excludes`` (caps, arches, minKernel), and is
resolved here, for this host and the container's capabilities, into the OCI
``linux.seccomp`` form that runc reads. Syscalls always denied (keyctl,
add_key, request_key, kexec_load, swapon, reboot without CAP_SYS_BOOT, ...)
are simply absent from it.
"""

import json
import os
from collections.abc import Iterable
from functools import cache
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument, quote
from cri.host import HOST

DEFAULT_PROFILE_FILE = os.path.join(os.path.dirname(__file__), "seccomp_default.json")
MAX_PROFILE_BYTES = 1 << 20

ACTIONS = frozenset(
    {
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
    }
)
OPERATORS = frozenset(
    {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
)
# kernel machine name -> its libseccomp name and the names profiles use for it (Go's GOARCH too)
ARCHES: dict[str, tuple[str, frozenset[str]]] = {
    "x86_64": ("SCMP_ARCH_X86_64", frozenset({"x86_64", "amd64"})),
    "aarch64": ("SCMP_ARCH_AARCH64", frozenset({"aarch64", "arm64"})),
    "i686": ("SCMP_ARCH_X86", frozenset({"i686", "i386", "386", "x86"})),
    "armv7l": ("SCMP_ARCH_ARM", frozenset({"armv7l", "arm"})),
    "ppc64le": ("SCMP_ARCH_PPC64LE", frozenset({"ppc64le"})),
    "s390x": ("SCMP_ARCH_S390X", frozenset({"s390x"})),
    "riscv64": ("SCMP_ARCH_RISCV64", frozenset({"riscv64"})),
}
# OCI keys of linux.seccomp and of one syscall rule; anything else is dropped from the output
_TOP_KEYS = ("defaultAction", "defaultErrnoRet", "architectures", "flags", "listenerPath", "listenerMetadata")
_RULE_KEYS = ("names", "action", "errnoRet", "args")


def _version(text: str) -> tuple[int, int]:
    parts = text.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        raise InvalidArgument(f"invalid kernel version {text!r} in a seccomp profile") from None


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_int(value: Any, what: str, lo: int = 0, hi: int = 2**64 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidArgument(f"seccomp profile: {what} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _known(value: Any, names: frozenset[str]) -> bool:
    # a JSON list or object is unhashable: 'in' a frozenset would raise TypeError
    return isinstance(value, str) and value in names


def _applies(rule: Any, caps: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    """The docker-format conditions: includes need all of their caps / one of
    their arches / at least minKernel; excludes drop the rule on any match."""
    if not isinstance(rule, dict):
        raise InvalidArgument("seccomp profile: every syscalls entry must be an object")
    aliases = ARCHES.get(arch, ("", frozenset({arch})))[1]
    inc = rule.get("includes") or {}
    exc = rule.get("excludes") or {}
    if not isinstance(inc, dict) or not isinstance(exc, dict):
        raise InvalidArgument("seccomp profile: includes and excludes must be objects")
    for cond in (inc, exc):
        for key in ("caps", "arches"):
            if key in cond and not _is_str_list(cond[key]):
                raise InvalidArgument(f"seccomp profile: {key} must be a list of strings")
    if inc.get("caps") and not all(c in caps for c in inc["caps"]):
        return False
    if inc.get("arches") and not aliases.intersection(inc["arches"]):
        return False
    if inc.get("minKernel") and kernel < _version(str(inc["minKernel"])):
        return False
    if exc.get("caps") and any(c in caps for c in exc["caps"]):
        return False
    if exc.get("arches") and aliases.intersection(exc["arches"]):
        return False
    return not (exc.get("minKernel") and kernel >= _version(str(exc["minKernel"])))


def _rule(raw: Any) -> dict[str, Any]:
    """One syscall rule validated and reduced to its OCI keys."""
    if not isinstance(raw, dict):
        raise InvalidArgument("seccomp profile: every syscalls entry must be an object")
    if "name" in raw:
        if "names" in raw:
            raise InvalidArgument("seccomp profile: a rule has both 'name' and 'names'")
        raw = {**raw, "names": [raw["name"]]}
    names = raw.get("names")
    if not _is_str_list(names) or not names:
        raise InvalidArgument("seccomp profile: every rule needs a non-empty list of syscall names")
    if not _known(raw.get("action"), ACTIONS):
        raise InvalidArgument(f"seccomp profile: unknown action {quote(raw.get('action'))} for {names[0]}")
    out: dict[str, Any] = {"names": list(names), "action": raw["action"]}
    if "errnoRet" in raw:
        out["errnoRet"] = _check_int(raw["errnoRet"], "errnoRet", 0, 4095)
    args = raw.get("args") or []
    if not isinstance(args, list):
        raise InvalidArgument("seccomp profile: args must be a list")
    checked = []
    for arg in args:
        if not isinstance(arg, dict) or not _known(arg.get("op"), OPERATORS):
            raise InvalidArgument(f"seccomp profile: bad argument filter {quote(arg)} for {names[0]}")
        a: dict[str, Any] = {"index": _check_int(arg.get("index"), "args.index", 0, 5)}
        a["value"] = _check_int(arg.get("value", 0), "args.value")
        if "valueTwo" in arg:
            a["valueTwo"] = _check_int(arg["valueTwo"], "args.valueTwo")
        a["op"] = arg["op"]
        checked.append(a)
    if checked:
        out["args"] = checked
    return out


def resolve(
    profile: Any, caps: Iterable[str], arch: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """A profile in OCI or docker format -> OCI ``linux.seccomp`` for this
    host (``arch``, ``kernel``) and a container whose bounding set is ``caps``."""
    if not isinstance(profile, dict):
        raise InvalidArgument("seccomp profile must be a JSON object")
    arch = arch or HOST.machine()
    kernel = kernel or HOST.kernel_version()
    held = frozenset(caps)
    if not _known(profile.get("defaultAction"), ACTIONS):
        raise InvalidArgument(f"seccomp profile: unknown defaultAction {quote(profile.get('defaultAction'))}")
    out: dict[str, Any] = {k: profile[k] for k in _TOP_KEYS if k in profile}
    if "defaultErrnoRet" in out:
        _check_int(out["defaultErrnoRet"], "defaultErrnoRet", 0, 4095)
    if "archMap" in profile:
        if "architectures" in profile:
            raise InvalidArgument("seccomp profile: use either 'architectures' or 'archMap'")
        arch_map = profile["archMap"] or []
        if not isinstance(arch_map, list):
            raise InvalidArgument(f"seccomp profile: archMap must be a list, got {quote(arch_map)}")
        own = ARCHES.get(arch, ("", frozenset()))[0]
        out["architectures"] = []
        for entry in arch_map:
            if isinstance(entry, dict) and entry.get("architecture") == own:
                subs = entry.get("subArchitectures") or []
                if not _is_str_list(subs):
                    raise InvalidArgument("seccomp profile: subArchitectures must be a list of strings")
                out["architectures"] = [own, *subs]
    if "architectures" in out and not _is_str_list(out["architectures"]):
        raise InvalidArgument("seccomp profile: architectures must be a list of strings")
    if "flags" in out and not _is_str_list(out["flags"]):
        raise InvalidArgument("seccomp profile: flags must be a list of strings")
    rules = profile.get("syscalls") or []
    if not isinstance(rules, list):
        raise InvalidArgument("seccomp profile: syscalls must be a list")
    out["syscalls"] = [_rule(r) for r in rules if _applies(r, held, arch, kernel)]
    return out


def _merge_allows(profile: dict[str, Any]) -> dict[str, Any]:
    """Fold the unconditional allows into one sorted rule at the front and drop
    conditional allows that it already covers (redundant, and a syscall with
    rules of both kinds is the corner where libseccomp versions differ)."""
    plain: set[str] = set()
    rest = []
    for r in profile["syscalls"]:
        if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r:
            plain.update(r["names"])
        else:
            rest.append(r)
    merged = [{"names": sorted(plain), "action": "SCMP_ACT_ALLOW"}] if plain else []
    for r in rest:
        if r["action"] == "SCMP_ACT_ALLOW":
            names = [n for n in r["names"] if n not in plain]
            if not names:
                continue
            r = {**r, "names": names}
        merged.append(r)
    return {**profile, "syscalls": merged}


@cache
def _default_source() -> dict[str, Any]:
    with open(DEFAULT_PROFILE_FILE) as f:
        data: dict[str, Any] = json.load(f)
    return data


def default_profile(
    caps: Iterable[str], arch: str | None = None, kernel: tuple[int, int] | None = None
) -> dict[str, Any]:
    """crid's RuntimeDefault profile for a container whose bounding set is ``caps``."""
    return _merge_allows(resolve(_default_source(), caps, arch, kernel))


def load_localhost(path: str, caps: Iterable[str]) -> dict[str, Any]:
    """A Localhost profile file (OCI or docker format) resolved for this container."""
    if not os.path.isabs(path):
        raise InvalidArgument(f"seccomp localhost profile path {path!r} must be absolute")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PROFILE_BYTES + 1)
    except FileNotFoundError:
        raise InvalidArgument(f"seccomp localhost profile {path} does not exist") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read seccomp localhost profile {path}: {exc.strerror}") from None
    if len(data) > MAX_PROFILE_BYTES:
        raise InvalidArgument(f"seccomp localhost profile {path} is larger than {MAX_PROFILE_BYTES} bytes")
    try:
        profile = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"seccomp localhost profile {path} is not valid JSON: {exc}") from None
    except RecursionError:  # a small file can nest deeper than the parser's stack
        raise InvalidArgument(f"seccomp localhost profile {path} is not valid JSON: nested too deeply") from None
    try:
        return resolve(profile, caps)
    except InvalidArgument as exc:
        raise InvalidArgument(f"seccomp localhost profile {path}: {exc}") from None


LOCALHOST_PREFIX = "localhost/"


def _from_path(path: str) -> pb.SecurityProfile | None:
    """The deprecated seccomp_profile_path string, as containerd reads it."""
    if path == "":
        return None
    if path in ("runtime/default", "docker/default"):
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    if path == "unconfined":
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    if path.startswith(LOCALHOST_PREFIX):
        return pb.SecurityProfile(
            profile_type=pb.SecurityProfile.Localhost, localhost_ref=path.removeprefix(LOCALHOST_PREFIX)
        )
    raise InvalidArgument(f"invalid seccomp profile {path!r}")


def for_container(sc: pb.LinuxContainerSecurityContext, caps: Iterable[str]) -> dict[str, Any] | None:
    """The container's ``linux.seccomp``; None means unconfined. Privileged
    containers run unconfined whatever they ask (containerd, CRI-O); an unset
    profile is unconfined too (kubelet sends RuntimeDefault when it wants it)."""
    if sc.privileged:
        return None
    sp = sc.seccomp if sc.HasField("seccomp") else _from_path(sc.seccomp_profile_path)
    if sp is None:
        return None
    if sp.profile_type != pb.SecurityProfile.Localhost and sp.localhost_ref:
        raise InvalidArgument("seccomp localhost_ref must only be set when the profile type is Localhost")
    if sp.profile_type == pb.SecurityProfile.Unconfined:
        return None
    if sp.profile_type == pb.SecurityProfile.RuntimeDefault:
        return default_profile(caps)
    if sp.profile_type == pb.SecurityProfile.Localhost:
        if not sp.localhost_ref:
            raise InvalidArgument("seccomp profile type Localhost needs a localhost_ref")
        return load_localhost(sp.localhost_ref.removeprefix(LOCALHOST_PREFIX), caps)
    raise InvalidArgument(f"unknown seccomp profile type {sp.profile_type}")
