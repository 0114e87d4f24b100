"""The spec's process: args, env, cwd, tty, user, oom_score_adj, capabilities; AppArmor, SELinux, seccomp."""

import os
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import CAPABILITIES, HOST
from cri.runtime.spec.process import DEFAULT_CAPS as SPEC_DEFAULT_CAPS
from cri.runtime.spec.process import DEFAULT_PATH
from tests.unit.spec.helpers import build, cc, pod, sec

DEFAULT_CAPS = list(SPEC_DEFAULT_CAPS)


# ---------------------------------------------------------------- process: args


@pytest.mark.parametrize(
    ("command", "args", "entrypoint", "cmd", "expected"),
    [
        (["run"], ["a"], ["/ep"], ["c"], ["run", "a"]),  # command set: image ignored
        (["run"], [], ["/ep"], ["c"], ["run"]),
        ([], ["a", "b"], ["/ep"], ["c"], ["/ep", "a", "b"]),  # only args: entrypoint + args
        ([], [], ["/ep", "-x"], ["c"], ["/ep", "-x", "c"]),  # neither: entrypoint + cmd
        ([], [], None, ["sh", "-c", "x"], ["sh", "-c", "x"]),
        ([], [], [""], ["sh"], ["sh"]),  # ENTRYPOINT [""] resets it
        ([], ["a"], None, ["c"], ["a"]),
    ],
)
def test_args(
    env: Path, command: list[str], args: list[str], entrypoint: list[str] | None, cmd: list[str], expected: list[str]
) -> None:
    doc = build(env, cc(command=command, args=args), image={"config": {"Entrypoint": entrypoint, "Cmd": cmd}})
    assert doc["process"]["args"] == expected


def test_no_command_at_all(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="no command"):
        build(env, cc(), image={"config": {}})
    with pytest.raises(InvalidArgument, match="no command"):
        build(env, cc(), image={})


def test_bad_image_config(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="Cmd"):
        build(env, cc(), image={"config": {"Cmd": "sh"}})
    with pytest.raises(InvalidArgument, match="User"):
        build(env, cc(), image={"config": {"Cmd": ["sh"], "User": 5}})


# ---------------------------------------------------------------- process: env, cwd, tty, user


def test_env_order_and_overrides(env: Path) -> None:
    config = cc(envs=[pb.KeyValue(key="B", value=b"cri"), pb.KeyValue(key="D", value=b"d=1")])
    image = {"config": {"Cmd": ["sh"], "Env": ["A=img", "B=img", "PATH=/img/bin"]}}
    doc = build(env, config, image=image)
    assert doc["process"]["env"] == ["PATH=/img/bin", "HOSTNAME=web-0", "A=img", "B=cri", "D=d=1"]


def test_env_default_path_and_hostname(env: Path) -> None:
    doc = build(env, cc(), image={"config": {"Cmd": ["sh"]}})
    assert doc["process"]["env"] == [DEFAULT_PATH, "HOSTNAME=web-0"]


def test_env_cri_overrides_hostname_and_path(env: Path) -> None:
    config = cc(envs=[pb.KeyValue(key="HOSTNAME", value=b"mine"), pb.KeyValue(key="PATH", value=b"/x")])
    assert build(env, config)["process"]["env"] == ["PATH=/x", "HOSTNAME=mine"]


def test_env_bare_image_name_unsets(env: Path) -> None:
    doc = build(env, cc(), image={"config": {"Cmd": ["sh"], "Env": ["A=1", "A"]}})
    assert not any(e.startswith("A=") for e in doc["process"]["env"])


def test_env_hostname_defaults_to_node(env: Path) -> None:
    doc = build(env, cc(), hostname="")
    assert f"HOSTNAME={os.uname().nodename}" in doc["process"]["env"]


@pytest.mark.parametrize(
    "kv", [pb.KeyValue(key="", value=b"x"), pb.KeyValue(key="A=B", value=b"x"), pb.KeyValue(key="A", value=b"\xff")]
)
def test_env_invalid(env: Path, kv: pb.KeyValue) -> None:
    with pytest.raises(InvalidArgument):
        build(env, cc(envs=[kv]))


def test_tty_sets_terminal_and_term(env: Path) -> None:
    doc = build(env, cc(tty=True))
    assert doc["process"]["terminal"] is True
    assert "TERM=xterm" in doc["process"]["env"]
    doc = build(env, cc(tty=True, envs=[pb.KeyValue(key="TERM", value=b"vt100")]))
    assert "TERM=vt100" in doc["process"]["env"] and "TERM=xterm" not in doc["process"]["env"]
    assert build(env, cc())["process"]["terminal"] is False


@pytest.mark.parametrize(
    ("working_dir", "image_wd", "cwd"),
    [
        ("/work", "/img", "/work"),
        ("", "/img", "/img"),
        ("", None, "/"),
        ("", "rel/dir", "/rel/dir"),
        ("/a/../b/", "", "/b"),
    ],
)
def test_cwd(env: Path, working_dir: str, image_wd: str | None, cwd: str) -> None:
    doc = build(env, cc(working_dir=working_dir), image={"config": {"Cmd": ["sh"], "WorkingDir": image_wd}})
    assert doc["process"]["cwd"] == cwd


def test_user_from_image(env: Path) -> None:
    doc = build(env, cc(), image={"config": {"Cmd": ["sh"], "User": "app"}})
    assert doc["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 1000]}


def test_user_from_security_context(env: Path) -> None:
    config = cc(linux=sec(run_as_user=pb.Int64Value(value=1000), supplemental_groups=[555]))
    assert build(env, config)["process"]["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [10, 555, 1000]}


def test_user_errors_propagate(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="ghost"):
        build(env, cc(linux=sec(run_as_username="ghost")))
    with pytest.raises(InvalidArgument, match="run_as_group"):
        build(env, cc(linux=sec(run_as_group=pb.Int64Value(value=1))))


def test_defaults_of_the_process(env: Path) -> None:
    p = build(env)["process"]
    assert p["user"] == {"uid": 0, "gid": 0, "additionalGids": [0]}
    assert p["noNewPrivileges"] is False
    assert "rlimits" not in p and "apparmorProfile" not in p and "selinuxLabel" not in p
    assert "oomScoreAdj" not in p


def test_no_new_privs(env: Path) -> None:
    assert build(env, cc(linux=sec(no_new_privs=True)))["process"]["noNewPrivileges"] is True


@pytest.mark.parametrize(
    ("requested", "minimum", "expected"), [(500, -999, 500), (-998, -999, -998), (-500, 0, 0), (0, 0, 0)]
)
def test_oom_score_adj_clamped(env: Path, requested: int, minimum: int, expected: int) -> None:
    config = cc(linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(oom_score_adj=requested)))
    assert build(env, config, min_oom_score_adj=minimum)["process"]["oomScoreAdj"] == expected


def test_oom_score_adj_range(env: Path) -> None:
    config = cc(linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(oom_score_adj=1001)))
    with pytest.raises(InvalidArgument, match="oom_score_adj"):
        build(env, config)


# ---------------------------------------------------------------- apparmor, selinux


@pytest.mark.parametrize(
    "kw",
    [
        {"apparmor": pb.SecurityProfile()},
        {"apparmor": pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref="p")},
        {"apparmor_profile": "runtime/default"},
        {"apparmor_profile": "localhost/foo"},
    ],
)
def test_apparmor_rejected(env: Path, kw: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="AppArmor is not enabled on this host"):
        build(env, cc(linux=sec(**kw)))


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"apparmor": pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)},
        {"apparmor_profile": "unconfined"},
    ],
)
def test_apparmor_unconfined_accepted(env: Path, kw: dict[str, Any]) -> None:
    assert "apparmorProfile" not in build(env, cc(linux=sec(**kw)))["process"]


def test_selinux_ignored(env: Path) -> None:
    doc = build(env, cc(linux=sec(selinux_options=pb.SELinuxOption(type="spc_t", level="s0"))))
    assert "selinuxLabel" not in doc["process"] and "mountLabel" not in doc["linux"]


# ---------------------------------------------------------------- capabilities


def caps_of(env: Path, **kw: Any) -> dict[str, list[str]]:
    return build(env, cc(linux=sec(capabilities=pb.Capability(**kw))))["process"]["capabilities"]  # type: ignore[no-any-return]


def test_default_capabilities(env: Path) -> None:
    caps = build(env)["process"]["capabilities"]
    assert caps == {"bounding": DEFAULT_CAPS, "effective": DEFAULT_CAPS, "permitted": DEFAULT_CAPS}
    assert len(DEFAULT_CAPS) == 14


def test_add_and_drop_any_spelling(env: Path) -> None:
    caps = caps_of(
        env, add_capabilities=["SYS_ADMIN", "cap_net_admin", "Sys_Time"], drop_capabilities=["CAP_MKNOD", "net_raw"]
    )
    for kind in ("bounding", "effective", "permitted"):
        assert {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_TIME"} <= set(caps[kind])
        assert "CAP_MKNOD" not in caps[kind] and "CAP_NET_RAW" not in caps[kind]
    assert "inheritable" not in caps and "ambient" not in caps


def test_add_all(env: Path) -> None:
    caps = caps_of(env, add_capabilities=["ALL"], drop_capabilities=["CHOWN"])
    assert set(caps["bounding"]) == set(CAPABILITIES) - {"CAP_CHOWN"}


def test_add_all_is_what_the_kernel_knows_and_crid_holds(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HOST, "known_capabilities", lambda: list(CAPABILITIES[:38]))
    monkeypatch.setattr(HOST, "own_capabilities", lambda: frozenset(CAPABILITIES) - {"CAP_SYS_RESOURCE"})
    caps = caps_of(env, add_capabilities=["all"])
    assert "CAP_SYS_RESOURCE" not in caps["bounding"] and "CAP_BPF" not in caps["bounding"]
    assert len(caps["bounding"]) == 37
    # a capability the kernel does not know yet is skipped (as runc does); one crid lacks is an error
    assert "CAP_BPF" not in caps_of(env, add_capabilities=["BPF"])["bounding"]
    with pytest.raises(InvalidArgument, match="CAP_SYS_RESOURCE"):
        caps_of(env, add_capabilities=["SYS_RESOURCE"])


def test_drop_all_then_add(env: Path) -> None:
    caps = caps_of(env, drop_capabilities=["ALL"], add_capabilities=["NET_BIND_SERVICE"])
    assert caps == {
        "bounding": ["CAP_NET_BIND_SERVICE"],
        "effective": ["CAP_NET_BIND_SERVICE"],
        "permitted": ["CAP_NET_BIND_SERVICE"],
    }
    assert caps_of(env, drop_capabilities=["ALL"])["bounding"] == []


@pytest.mark.parametrize(
    "kw",
    [{"add_capabilities": ["NOT_A_CAP"]}, {"drop_capabilities": ["CAP_BOGUS"]}, {"add_ambient_capabilities": ["X"]}],
)
def test_unknown_capability(env: Path, kw: dict[str, list[str]]) -> None:
    with pytest.raises(InvalidArgument, match="unknown capability"):
        caps_of(env, **kw)


def test_ambient_capabilities(env: Path) -> None:
    caps = caps_of(env, add_ambient_capabilities=["NET_ADMIN"])
    for kind in ("bounding", "effective", "permitted"):
        assert "CAP_NET_ADMIN" in caps[kind]
    assert caps["inheritable"] == ["CAP_NET_ADMIN"] and caps["ambient"] == ["CAP_NET_ADMIN"]
    caps = caps_of(env, add_ambient_capabilities=["NET_ADMIN"], drop_capabilities=["NET_ADMIN"])
    assert "ambient" not in caps and "CAP_NET_ADMIN" not in caps["bounding"]


def test_privileged_has_every_capability(env: Path) -> None:
    config = cc(linux=sec(privileged=True, capabilities=pb.Capability(drop_capabilities=["ALL"])))
    caps = build(env, config, sandbox=pod(privileged=True))["process"]["capabilities"]
    assert caps["bounding"] == list(CAPABILITIES) == caps["effective"] == caps["permitted"]


# ---------------------------------------------------------------- seccomp


def test_seccomp_default_resolved_against_capabilities(env: Path) -> None:
    doc = build(env, cc(linux=sec(seccomp=pb.SecurityProfile())))
    names = {n for r in doc["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert "sethostname" not in names and "mount" not in names
    config = cc(linux=sec(seccomp=pb.SecurityProfile(), capabilities=pb.Capability(add_capabilities=["SYS_ADMIN"])))
    names = {n for r in build(env, config)["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert {"sethostname", "mount"} <= names
    assert "seccomp" not in build(env)["linux"]
