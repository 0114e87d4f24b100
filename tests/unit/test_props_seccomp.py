"""Property tests of seccomp profile resolution (cri/runtime/seccomp.py)."""

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.runtime import seccomp, spec

SP = pb.SecurityProfile
ACTIONS = sorted(seccomp.ACTIONS)
OPERATORS = sorted(seccomp.OPERATORS)
ALL_CAPS = sorted({*spec.DEFAULT_CAPS, "CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_BOOT", "CAP_BPF", "CAP_SYS_TIME"})
ARCHES = sorted(seccomp.ARCHES)
SYSCALLS = ["read", "write", "clone", "clone3", "mount", "bpf", "ptrace", "reboot", "personality", "socket"]
KERNEL = st.tuples(st.integers(3, 7), st.integers(0, 20))

caps = st.lists(st.sampled_from(ALL_CAPS), unique=True).map(frozenset)
arch_names = st.lists(st.sampled_from(["amd64", "x86_64", "arm64", "aarch64", "386", "s390x", "riscv64"]), max_size=2)
condition = st.fixed_dictionaries(
    {},
    optional={
        "caps": st.lists(st.sampled_from(ALL_CAPS), max_size=2),
        "arches": arch_names,
        "minKernel": st.builds("{}.{}".format, st.integers(3, 7), st.integers(0, 20)),
    },
)
u64 = st.integers(0, 2**64 - 1)
arg = st.fixed_dictionaries(
    {"index": st.integers(0, 5), "value": u64, "op": st.sampled_from(OPERATORS)}, optional={"valueTwo": u64}
)


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(SYSCALLS), min_size=1, max_size=3))
    r: dict[str, Any] = {"name": names[0]} if len(names) == 1 and draw(st.booleans()) else {"names": names}
    r["action"] = draw(st.sampled_from(ACTIONS))
    r.update(
        draw(st.fixed_dictionaries({}, optional={"errnoRet": st.integers(0, 4095), "args": st.lists(arg, max_size=2)}))
    )
    r.update(
        draw(st.fixed_dictionaries({}, optional={"includes": condition, "excludes": condition, "comment": st.text()}))
    )
    return r


@st.composite
def profiles(draw: st.DrawFn) -> dict[str, Any]:
    p: dict[str, Any] = {"defaultAction": draw(st.sampled_from(ACTIONS))}
    if draw(st.booleans()):
        p["defaultErrnoRet"] = draw(st.integers(0, 4095))
    if draw(st.booleans()):
        p["architectures"] = draw(st.lists(st.sampled_from(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]), max_size=2))
    elif draw(st.booleans()):
        subs = st.lists(st.sampled_from(["SCMP_ARCH_X86", "SCMP_ARCH_ARM"]), max_size=2)
        p["archMap"] = [
            {"architecture": seccomp.ARCHES[a][0], "subArchitectures": draw(subs)}
            for a in draw(st.lists(st.sampled_from(ARCHES), unique=True))
        ]
    if draw(st.booleans()):
        p["flags"] = draw(st.lists(st.sampled_from(["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"])))
    p["syscalls"] = draw(st.lists(rules(), max_size=5))
    return p


def applies(rule: dict[str, Any], held: frozenset[str], arch: str, kernel: tuple[int, int]) -> bool:
    """The docker format's conditions, as moby documents them."""
    aliases = seccomp.ARCHES[arch][1]
    inc, exc = rule.get("includes", {}), rule.get("excludes", {})

    def ver(text: str) -> tuple[int, int]:
        major, minor = text.split(".")
        return int(major), int(minor)

    return (
        all(c in held for c in inc.get("caps", []))
        and (not inc.get("arches") or bool(aliases & set(inc["arches"])))
        and ("minKernel" not in inc or kernel >= ver(inc["minKernel"]))
        and not any(c in held for c in exc.get("caps", []))
        and not aliases & set(exc.get("arches", []))
        and not ("minKernel" in exc and kernel >= ver(exc["minKernel"]))
    )


@given(profiles(), caps, st.sampled_from(ARCHES), KERNEL)
def test_profiles_resolve_to_the_rules_that_apply(
    profile: dict[str, Any], held: frozenset[str], arch: str, kernel: tuple[int, int]
) -> None:
    out = seccomp.resolve(profile, held, arch, kernel)
    json.dumps(out)
    assert set(out) <= {*seccomp._TOP_KEYS, "syscalls"} and out["defaultAction"] == profile["defaultAction"]
    kept = [r for r in profile["syscalls"] if applies(r, held, arch, kernel)]
    assert [r["names"] for r in out["syscalls"]] == [r.get("names", [r.get("name")]) for r in kept]
    assert [r["action"] for r in out["syscalls"]] == [r["action"] for r in kept]
    for got, want in zip(out["syscalls"], kept, strict=True):
        assert set(got) <= {"names", "action", "errnoRet", "args"}  # docker-only keys are dropped
        assert (got.get("errnoRet"), got.get("args", [])) == (want.get("errnoRet"), want.get("args", []))
    if "archMap" in profile:
        own = seccomp.ARCHES[arch][0]
        entries = [e for e in profile["archMap"] if e["architecture"] == own]
        assert out["architectures"] == ([own, *entries[-1]["subArchitectures"]] if entries else [])
    else:
        assert out.get("architectures") == profile.get("architectures")


# --- the default profile


@given(caps, caps, st.sampled_from(ARCHES), KERNEL)
def test_default_profile_grows_with_capabilities_and_never_conflicts(
    held: frozenset[str], more: frozenset[str], arch: str, kernel: tuple[int, int]
) -> None:
    def plain(p: dict[str, Any]) -> set[str]:
        return {n for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for n in r["names"]}

    small = seccomp.default_profile(held, arch, kernel)
    big = seccomp.default_profile(held | more, arch, kernel)
    assert plain(small) <= plain(big)
    for p in (small, big):
        allowed = plain(p)
        assert not allowed & {"keyctl", "add_key", "request_key", "kexec_load", "swapon"}
        assert ("mount" in allowed) == ("CAP_SYS_ADMIN" in (held if p is small else held | more))
        # a syscall allowed outright has no other rule (the libseccomp corner _merge_allows avoids)
        others = [n for r in p["syscalls"] if r["action"] != "SCMP_ACT_ALLOW" or "args" in r for n in r["names"]]
        assert not allowed & set(others)


# --- damaged profiles

scalar = st.none() | st.booleans() | st.integers(-(2**65), 2**65) | st.text(max_size=6) | st.sampled_from(ACTIONS)
json_any: st.SearchStrategy[Any] = st.recursive(
    scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
)


def _damage(draw: st.DrawFn, obj: Any, values: st.SearchStrategy[Any], depth: int = 0) -> Any:
    """``obj`` with one value somewhere (or a key added) replaced by one of ``values``."""
    if isinstance(obj, dict) and depth < 5 and draw(st.booleans()):
        existing: bool = bool(obj) and draw(st.booleans())
        keys = sorted(obj) if existing else ["archMap", "name", "includes", "args", "op"]  # or a new key
        key = draw(st.sampled_from(keys))
        return {**obj, key: _damage(draw, obj.get(key), values, depth + 1)}
    if isinstance(obj, list) and obj and depth < 5 and draw(st.booleans()):
        i = draw(st.integers(0, len(obj) - 1))
        return [*obj[:i], _damage(draw, obj[i], values, depth + 1), *obj[i + 1 :]]
    return draw(values)


def resolves_or_is_invalid(profile: Any, held: frozenset[str]) -> None:
    try:
        out = seccomp.resolve(profile, held, "x86_64", (6, 1))
    except InvalidArgument as exc:
        assert str(exc)
        return
    json.dumps(out)
    for r in out["syscalls"]:
        assert r["names"] and r["action"] in seccomp.ACTIONS


@st.composite
def damaged(draw: st.DrawFn, values: st.SearchStrategy[Any]) -> Any:
    return _damage(draw, draw(profiles()), values)


@given(damaged(scalar), caps)
@example({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_NOPE"}]}, frozenset())
@example({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
          "includes": {"minKernel": "x.y"}}]}, frozenset())  # fmt: skip
@example({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["x"], "archMap": []}, frozenset())
def test_damaged_profiles_resolve_or_raise_invalid_argument(profile: Any, held: frozenset[str]) -> None:
    resolves_or_is_invalid(profile, held)


@given(damaged(json_any), caps)
@example({"defaultAction": []}, frozenset())
@example({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": {}}]}, frozenset())
def test_profiles_with_lists_and_objects_anywhere_raise_invalid_argument(profile: Any, held: frozenset[str]) -> None:
    resolves_or_is_invalid(profile, held)


@given(profiles(), scalar)
@example({"defaultAction": "SCMP_ACT_ALLOW"}, 5)
def test_any_arch_map_resolves_or_raises_invalid_argument(profile: dict[str, Any], arch_map: Any) -> None:
    resolves_or_is_invalid({**profile, "archMap": arch_map}, frozenset())


# --- the CRI fields that choose a profile


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("seccomp")
    good = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"}]}
    (d / "good.json").write_text(json.dumps(good))
    (d / "bad.json").write_text('{"defaultAction": "SCMP_ACT_NOPE"}')
    (d / "junk.json").write_bytes(b"\xff{")
    (d / "dir").mkdir()
    return {"good": str(d / "good.json"), "bad": str(d / "bad.json"), "junk": str(d / "junk.json"),
            "dir": str(d / "dir"), "missing": str(d / "missing.json"), "relative": "profiles/good.json"}  # fmt: skip


LOCAL = ["good", "bad", "junk", "dir", "missing", "relative", ""]
TYPES = [SP.RuntimeDefault, SP.Unconfined, SP.Localhost, 7]  # 7: not in the enum


def expected(
    privileged: bool, sp: tuple[int, str] | None, path: str, files: dict[str, str], held: frozenset[str]
) -> Any:
    """What containerd does with the fields (None: unconfined; InvalidArgument: refused)."""
    if privileged:
        return None
    if sp is None:
        if path == "":
            return None
        if path in ("runtime/default", "docker/default"):
            sp = (SP.RuntimeDefault, "")
        elif path == "unconfined":
            return None
        elif path.startswith("localhost/"):
            sp = (SP.Localhost, path.removeprefix("localhost/"))
        else:
            return InvalidArgument
    kind, ref = sp
    if kind == SP.Localhost:
        ref = ref.removeprefix("localhost/")
        if ref != files["good"]:
            return InvalidArgument  # empty, relative, missing, a directory, not JSON, not a valid profile
        return seccomp.resolve(json.loads(Path(ref).read_text()), held)
    if ref:
        return InvalidArgument  # localhost_ref only with Localhost
    if kind == SP.RuntimeDefault:
        return seccomp.default_profile(held)
    return None if kind == SP.Unconfined else InvalidArgument


local = st.sampled_from(LOCAL)


@given(
    st.booleans(),
    st.none() | st.tuples(st.sampled_from(TYPES), local | local.map("localhost/{}".format)),
    st.sampled_from(["", "runtime/default", "docker/default", "unconfined", "localhost/", "Unconfined", "x"])
    | local.map("localhost/{}".format),
    caps,
)
def test_security_context_chooses_the_profile(
    files: dict[str, str], privileged: bool, sp: tuple[int, str] | None, path: str, held: frozenset[str]
) -> None:
    def name(ref: str) -> str:  # the placeholders above -> the module's files
        bare = ref.removeprefix("localhost/")
        return ref[: len(ref) - len(bare)] + files.get(bare, bare)

    sp = None if sp is None else (sp[0], name(sp[1]))
    path = name(path) if path.startswith("localhost/") else path
    sc = pb.LinuxContainerSecurityContext(privileged=privileged, seccomp_profile_path=path)
    if sp is not None:
        sc.seccomp.CopyFrom(SP(profile_type=sp[0], localhost_ref=sp[1]))  # type: ignore[arg-type]
    want = expected(privileged, sp, path, files, held)
    if want is InvalidArgument:
        with pytest.raises(InvalidArgument):
            seccomp.for_container(sc, held)
    else:
        assert seccomp.for_container(sc, held) == want


@given(st.binary(max_size=200) | profiles().map(lambda p: json.dumps(p).encode()), caps)
def test_localhost_files_load_or_raise_invalid_argument(data: bytes, held: frozenset[str]) -> None:
    fd, path = tempfile.mkstemp()
    try:
        os.write(fd, data)
        os.close(fd)
        try:
            seccomp.load_localhost(path, held)
        except InvalidArgument as exc:
            assert path in str(exc)
    finally:
        os.unlink(path)


@given(st.integers(1, 300_000))
@example(100_000)
def test_deeply_nested_localhost_files_raise_invalid_argument(depth: int) -> None:
    fd, path = tempfile.mkstemp()
    try:
        os.write(fd, b"[" * depth)
        os.close(fd)
        with pytest.raises(InvalidArgument):
            seccomp.load_localhost(path, frozenset())
    finally:
        os.unlink(path)
