"""Seccomp: crid's default profile, Localhost profiles, and the CRI fields that choose one."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import HOST
from cri.runtime import seccomp, spec

DEFAULT_CAPS = list(spec.DEFAULT_CAPS)
NS_MASK = 0x7E020000  # CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP
BLOCKED_ALWAYS = ["keyctl", "add_key", "request_key", "kexec_load", "kexec_file_load", "swapon", "swapoff", "acct"]
NEEDS_SYS_ADMIN = [
    "mount",
    "umount2",
    "unshare",
    "setns",
    "sethostname",
    "setdomainname",
    "bpf",
    "fsopen",
    "move_mount",
]
# what busybox sh, ls, id, sleep, nc, a shell trap, and a libc start-up use
COMMON = [
    "read", "write", "openat", "close", "execve", "exit_group", "mmap", "mprotect", "brk", "rt_sigaction",
    "rt_sigprocmask", "rt_sigreturn", "wait4", "fork", "vfork", "getdents64", "newfstatat", "statx", "lstat", "fstat",
    "ioctl", "getuid", "getgid", "geteuid", "getgroups", "getpid", "getppid", "kill", "nanosleep", "clock_nanosleep",
    "connect", "bind", "listen", "accept4", "poll", "select", "pselect6", "setsockopt", "sendto", "recvfrom",
    "dup2", "pipe2", "fcntl", "uname", "chdir", "getcwd", "arch_prctl", "set_tid_address", "prlimit64", "futex",
    "chroot",
]  # fmt: skip


def rules_for(profile: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [r for r in profile["syscalls"] if name in r["names"]]


def allowed_plainly(profile: dict[str, Any], name: str) -> bool:
    return any(r["action"] == "SCMP_ACT_ALLOW" and "args" not in r for r in rules_for(profile, name))


def default(caps: list[str] = DEFAULT_CAPS, arch: str = "x86_64", kernel: tuple[int, int] = (6, 1)) -> dict[str, Any]:
    return seccomp.default_profile(caps, arch, kernel)


# ---------------------------------------------------------------- the default profile


def test_default_shape() -> None:
    p = default()
    assert p["defaultAction"] == "SCMP_ACT_ERRNO"
    assert p["defaultErrnoRet"] == 1
    assert p["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert set(p) <= {"defaultAction", "defaultErrnoRet", "architectures", "syscalls"}
    for r in p["syscalls"]:
        assert set(r) <= {"names", "action", "errnoRet", "args"}
        assert r["names"] and all(re.fullmatch(r"_?[a-z0-9_]+", n) for n in r["names"])
    json.dumps(p)


def test_default_arm64() -> None:
    p = default(arch="aarch64")
    assert p["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert allowed_plainly(p, "set_tls")
    assert not rules_for(p, "arch_prctl")


def test_unknown_arch_gets_native_only() -> None:
    assert default(arch="sparc64")["architectures"] == []


@pytest.mark.parametrize("name", COMMON)
def test_common_syscalls_allowed(name: str) -> None:
    assert allowed_plainly(default(), name)


@pytest.mark.parametrize("name", [*BLOCKED_ALWAYS, "reboot", "init_module", "iopl", "settimeofday", "kcmp", "syslog"])
def test_dangerous_syscalls_blocked(name: str) -> None:
    assert not rules_for(default(), name)


@pytest.mark.parametrize("name", NEEDS_SYS_ADMIN)
def test_sys_admin_group(name: str) -> None:
    assert not rules_for(default(), name)
    assert allowed_plainly(default([*DEFAULT_CAPS, "CAP_SYS_ADMIN"]), name)


@pytest.mark.parametrize("name", BLOCKED_ALWAYS)
def test_blocked_even_with_every_capability(name: str) -> None:
    # every capability group except CAP_SYS_PACCT (whose one syscall, acct, is in the list)
    every = [*DEFAULT_CAPS, "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_SYS_TIME"]
    assert not rules_for(default(every), name)


def test_clone_without_sys_admin_cannot_make_namespaces() -> None:
    (rule,) = rules_for(default(), "clone")
    assert rule["action"] == "SCMP_ACT_ALLOW"
    assert rule["args"] == [{"index": 0, "value": NS_MASK, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    (rule3,) = rules_for(default(), "clone3")
    assert rule3 == {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}


def test_clone_with_sys_admin_is_free() -> None:
    p = default([*DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    assert [r.get("args") for r in rules_for(p, "clone")] == [None]
    assert [r["action"] for r in rules_for(p, "clone3")] == ["SCMP_ACT_ALLOW"]


def test_personality_values() -> None:
    values = sorted(r["args"][0]["value"] for r in rules_for(default(), "personality"))
    assert values == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_socket_filters_af_alg_and_vsock() -> None:
    rules = rules_for(default(), "socket")
    assert all(len(r["args"]) == 1 for r in rules)

    def allowed(domain: int) -> bool:
        ops = {"SCMP_CMP_LT": int.__lt__, "SCMP_CMP_EQ": int.__eq__, "SCMP_CMP_GT": int.__gt__}
        return any(ops[r["args"][0]["op"]](domain, r["args"][0]["value"]) for r in rules)

    assert allowed(1) and allowed(2) and allowed(10) and allowed(16) and allowed(17) and allowed(39)
    assert not allowed(38) and not allowed(40)


def test_ptrace_depends_on_kernel() -> None:
    assert allowed_plainly(default(kernel=(4, 8)), "ptrace")
    assert not rules_for(default(kernel=(4, 4)), "ptrace")
    assert allowed_plainly(default([*DEFAULT_CAPS, "CAP_SYS_PTRACE"], kernel=(4, 4)), "ptrace")


@pytest.mark.parametrize(
    ("cap", "name"),
    [
        ("CAP_SYS_BOOT", "reboot"),
        ("CAP_SYS_MODULE", "finit_module"),
        ("CAP_SYS_PACCT", "acct"),
        ("CAP_SYS_PTRACE", "kcmp"),
        ("CAP_SYS_RAWIO", "iopl"),
        ("CAP_SYS_TIME", "clock_settime"),
        ("CAP_SYS_TTY_CONFIG", "vhangup"),
        ("CAP_SYS_NICE", "mbind"),
        ("CAP_SYSLOG", "syslog"),
        ("CAP_BPF", "bpf"),
        ("CAP_PERFMON", "perf_event_open"),
        ("CAP_DAC_READ_SEARCH", "open_by_handle_at"),
    ],
)
def test_capability_groups(cap: str, name: str) -> None:
    assert not rules_for(default(), name)
    assert allowed_plainly(default([*DEFAULT_CAPS, cap]), name)


def test_chroot_follows_sys_chroot() -> None:
    assert allowed_plainly(default(), "chroot")
    assert not rules_for(default([c for c in DEFAULT_CAPS if c != "CAP_SYS_CHROOT"]), "chroot")


def test_allows_are_merged_without_duplicates() -> None:
    p = default([*DEFAULT_CAPS, "CAP_SYS_ADMIN", "CAP_SYSLOG", "CAP_BPF", "CAP_SYS_PTRACE"])
    first = p["syscalls"][0]
    assert first["action"] == "SCMP_ACT_ALLOW" and "args" not in first
    assert first["names"] == sorted(set(first["names"]))
    plain = [r for r in p["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and "args" not in r]
    assert len(plain) == 1
    for name in ("syslog", "bpf", "ptrace", "clone"):
        assert len(rules_for(p, name)) == 1


def test_data_file_is_docker_format_with_comments() -> None:
    with open(seccomp.DEFAULT_PROFILE_FILE) as f:
        data = json.load(f)
    assert {a["architecture"] for a in data["archMap"]} == {"SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"}
    assert all(r.get("comment") for r in data["syscalls"])
    base = data["syscalls"][0]["names"]
    assert len(base) == len(set(base)) > 300


# ---------------------------------------------------------------- resolving other profiles


def test_resolve_oci_profile_passes_through() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "flags": ["SECCOMP_FILTER_FLAG_LOG"],
        "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }
    assert seccomp.resolve(profile, [], "x86_64", (6, 1)) == profile


def test_resolve_docker_profile() -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]}],
        "syscalls": [
            {"name": "read", "action": "SCMP_ACT_ALLOW", "comment": "old singular form"},
            {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
            {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
            {"names": ["set_tls"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
            {"names": ["new_one"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "9.0"}},
            {"names": ["x"], "action": "SCMP_ACT_ALLOW", "excludes": {"arches": ["x86_64"]}},
        ],
    }
    out = seccomp.resolve(profile, [], "x86_64", (6, 1))
    assert out["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"]
    assert [r["names"] for r in out["syscalls"]] == [["read"], ["arch_prctl"]]
    assert "comment" not in out["syscalls"][0]


@pytest.mark.parametrize(
    "profile",
    [
        [],
        {"syscalls": []},
        {"defaultAction": "SCMP_ACT_NOPE"},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "ALLOW"}]},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ERRNO"}]},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"name": "a", "names": ["a"], "action": "SCMP_ACT_ERRNO"}]},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": ["read"]},
        {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {"names": ["read"]}},
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
                {"names": ["a"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}
            ],
        },
        {
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["a"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "EQ"}]}],
        },
        {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"], "archMap": []},
        {"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": -1},
        {"defaultAction": "SCMP_ACT_ALLOW", "architectures": "SCMP_ARCH_X86_64"},
    ],
)
def test_resolve_rejects_bad_profiles(profile: Any) -> None:
    with pytest.raises(InvalidArgument):
        seccomp.resolve(profile, [], "x86_64", (6, 1))


# ---------------------------------------------------------------- choosing a profile from the CRI request

CRITEST_BLOCK_HOSTNAME = """{
     "defaultAction": "SCMP_ACT_ALLOW",
     "syscalls": [
         {
             "names": ["sethostname"],
             "action": "SCMP_ACT_ERRNO"
         }
     ]
}"""


def ctx(**kw: Any) -> pb.LinuxContainerSecurityContext:
    return pb.LinuxContainerSecurityContext(**kw)


def test_unset_is_unconfined() -> None:
    assert seccomp.for_container(ctx(), DEFAULT_CAPS) is None


def test_runtime_default_is_an_empty_message() -> None:
    # critest "should support seccomp default": SecurityProfile{} (RuntimeDefault is 0)
    p = seccomp.for_container(ctx(seccomp=pb.SecurityProfile()), DEFAULT_CAPS)
    assert p is not None and p["defaultAction"] == "SCMP_ACT_ERRNO"
    assert not rules_for(p, "sethostname")


def test_runtime_default_follows_capabilities() -> None:
    p = seccomp.for_container(ctx(seccomp=pb.SecurityProfile()), [*DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    assert p is not None and allowed_plainly(p, "sethostname")


def test_unconfined() -> None:
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    assert seccomp.for_container(ctx(seccomp=sp), DEFAULT_CAPS) is None


def test_localhost_profile(tmp_path: Path) -> None:
    path = tmp_path / "block-host-name.json"
    path.write_text(CRITEST_BLOCK_HOSTNAME)
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(path))
    p = seccomp.for_container(ctx(seccomp=sp), [*DEFAULT_CAPS, "CAP_SYS_ADMIN"])
    assert p == {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO"}],
    }


def test_localhost_prefix_is_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(CRITEST_BLOCK_HOSTNAME)
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=f"localhost/{path}")
    assert seccomp.for_container(ctx(seccomp=sp), []) is not None


def test_localhost_missing_file_names_it(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.json")
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=missing)
    with pytest.raises(InvalidArgument, match=re.escape(missing)):
        seccomp.for_container(ctx(seccomp=sp), [])


def test_localhost_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(path))
    with pytest.raises(InvalidArgument, match="not valid JSON"):
        seccomp.for_container(ctx(seccomp=sp), [])


def test_localhost_invalid_profile_names_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["a"], "action": "nope"}]}')
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(path))
    with pytest.raises(InvalidArgument, match=r"bad\.json"):
        seccomp.for_container(ctx(seccomp=sp), [])


@pytest.mark.parametrize("ref", ["", "relative/profile.json"])
def test_localhost_needs_absolute_ref(ref: str) -> None:
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=ref)
    with pytest.raises(InvalidArgument):
        seccomp.for_container(ctx(seccomp=sp), [])


def test_localhost_ref_only_with_localhost() -> None:
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault, localhost_ref="/x.json")
    with pytest.raises(InvalidArgument, match="localhost_ref"):
        seccomp.for_container(ctx(seccomp=sp), [])


def test_privileged_is_always_unconfined(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(CRITEST_BLOCK_HOSTNAME)
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(path))
    assert seccomp.for_container(ctx(seccomp=sp, privileged=True), []) is None
    assert seccomp.for_container(ctx(seccomp=pb.SecurityProfile(), privileged=True), []) is None


@pytest.mark.parametrize("path", ["runtime/default", "docker/default"])
def test_deprecated_path_default(path: str) -> None:
    p = seccomp.for_container(ctx(seccomp_profile_path=path), DEFAULT_CAPS)
    assert p is not None and p["defaultAction"] == "SCMP_ACT_ERRNO"


def test_deprecated_path_unconfined_and_localhost(tmp_path: Path) -> None:
    assert seccomp.for_container(ctx(seccomp_profile_path="unconfined"), []) is None
    path = tmp_path / "p.json"
    path.write_text(CRITEST_BLOCK_HOSTNAME)
    p = seccomp.for_container(ctx(seccomp_profile_path=f"localhost/{path}"), [])
    assert p is not None and p["defaultAction"] == "SCMP_ACT_ALLOW"


def test_deprecated_path_invalid() -> None:
    with pytest.raises(InvalidArgument, match="invalid seccomp profile"):
        seccomp.for_container(ctx(seccomp_profile_path="/abs/path.json"), [])


def test_field_wins_over_deprecated_path() -> None:
    sp = pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)
    assert seccomp.for_container(ctx(seccomp=sp, seccomp_profile_path="runtime/default"), []) is None


def test_host_helpers() -> None:
    assert HOST.kernel_version() >= (3, 0)
    assert HOST.machine()
