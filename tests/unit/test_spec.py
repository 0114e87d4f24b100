"""CreateContainer request -> OCI runtime spec, checked key by key, plus one real runc run when root."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import CAPABILITIES, HOST
from cri.runtime.spec.build import DEFAULT_MASKED_PATHS, SpecInputs, build_spec
from cri.runtime.spec.process import DEFAULT_CAPS as SPEC_DEFAULT_CAPS
from cri.runtime.spec.process import DEFAULT_PATH
from cri.runtime.spec.resources import update_resources

DEFAULT_CAPS = list(SPEC_DEFAULT_CAPS)
NAMESPACE_TYPES = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed host: cgroup v1 without swap or hugetlb accounting, every capability known and held."""
    monkeypatch.setattr(HOST, "cgroup_v2", lambda: False)
    monkeypatch.setattr(HOST, "swap_available", lambda: False)
    monkeypatch.setattr(HOST, "hugetlb_available", lambda: False)
    monkeypatch.setattr(HOST, "known_capabilities", lambda: list(CAPABILITIES))
    monkeypatch.setattr(HOST, "own_capabilities", lambda: frozenset(CAPABILITIES))


@pytest.fixture
def env(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nwheel:x:10:app\napp:x:1000:\n")
    pod = tmp_path / "pod"
    pod.mkdir()
    for name in ("hostname", "hosts", "resolv.conf"):
        (pod / name).write_text(name + "\n")
    (tmp_path / "shm").mkdir()
    return tmp_path


def cc(**kw: Any) -> pb.ContainerConfig:
    kw.setdefault("metadata", pb.ContainerMetadata(name="app"))
    kw.setdefault("image", pb.ImageSpec(image="docker.io/library/busybox:latest"))
    return pb.ContainerConfig(**kw)


def sec(**kw: Any) -> pb.LinuxContainerConfig:
    return pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(**kw))


def pod(**sc: Any) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", uid="pod-uid", namespace="default"),
        hostname="web-0",
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(**sc)),
    )


def make(
    env: Path,
    config: pb.ContainerConfig | None = None,
    *,
    sandbox: pb.PodSandboxConfig | None = None,
    image: dict[str, Any] | None = None,
    **kw: Any,
) -> SpecInputs:
    args: dict[str, Any] = {
        "container_id": "c1",
        "config": config if config is not None else cc(),
        "sandbox_config": sandbox if sandbox is not None else pod(),
        "image_config": image if image is not None else {"config": {"Cmd": ["sh"], "Env": ["PATH=/bin:/usr/bin"]}},
        "rootfs": str(env / "rootfs"),
        "namespaces": {"net": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts"},
        "pid_namespace": "",
        "sandbox_dir": str(env / "pod"),
        "shm": str(env / "shm"),
        "cgroups_path": "/kubepods/pod1/c1",
        "min_oom_score_adj": -999,
        "hostname": "web-0",
        "sandbox_id": "sb1",
    }
    args.update(kw)
    return SpecInputs(**args)


def build(env: Path, config: pb.ContainerConfig | None = None, **kw: Any) -> dict[str, Any]:
    doc = build_spec(make(env, config, **kw))
    check_oci(doc)
    return doc


def check_oci(doc: dict[str, Any]) -> None:
    """The runtime-spec's shape (config.md, config-linux.md): required keys and their types."""
    json.loads(json.dumps(doc))
    assert isinstance(doc["ociVersion"], str)
    assert isinstance(doc["root"]["path"], str) and isinstance(doc["root"].get("readonly", False), bool)
    p = doc["process"]
    assert isinstance(p["terminal"], bool) and isinstance(p["noNewPrivileges"], bool)
    assert isinstance(p["user"]["uid"], int) and isinstance(p["user"]["gid"], int)
    assert all(isinstance(g, int) for g in p["user"].get("additionalGids", []))
    assert p["args"] and all(isinstance(a, str) for a in p["args"])
    assert all(isinstance(e, str) and "=" in e for e in p["env"])
    assert p["cwd"].startswith("/")
    assert isinstance(p.get("oomScoreAdj", 0), int)
    for kind, caps in p["capabilities"].items():
        assert kind in {"bounding", "effective", "permitted", "inheritable", "ambient"}
        assert all(c in CAPABILITIES for c in caps)
    for m in doc["mounts"]:
        assert m["destination"].startswith("/")
        assert isinstance(m["type"], str) and isinstance(m["source"], str)
        assert all(isinstance(o, str) for o in m["options"])
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in doc["annotations"].items())
    linux = doc["linux"]
    types = [n["type"] for n in linux["namespaces"]]
    assert set(types) <= NAMESPACE_TYPES and len(types) == len(set(types))
    assert all(isinstance(n.get("path", ""), str) for n in linux["namespaces"])
    for rule in linux["resources"]["devices"]:
        assert isinstance(rule["allow"], bool) and set(rule["access"]) <= set("rwm")
    for dev in linux.get("devices", []):
        assert {"path", "type", "major", "minor"} <= set(dev) and dev["type"] in ("c", "b", "u", "p")
    assert all(isinstance(x, str) for x in linux.get("maskedPaths", []) + linux.get("readonlyPaths", []))
    if "seccomp" in linux:
        assert isinstance(linux["seccomp"]["defaultAction"], str)
        assert all(r["names"] and isinstance(r["action"], str) for r in linux["seccomp"]["syscalls"])
    assert all(isinstance(v, str) for v in linux.get("sysctl", {}).values())
    assert "hostname" not in doc


def mount_at(doc: dict[str, Any], dst: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in doc["mounts"] if m["destination"] == dst]
    assert len(found) == 1, destinations(doc)
    return found[0]


def destinations(doc: dict[str, Any]) -> list[str]:
    return [m["destination"] for m in doc["mounts"]]


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


# ---------------------------------------------------------------- mounts


def test_default_mounts_in_order(env: Path) -> None:
    doc = build(env)
    assert destinations(doc) == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hostname",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/dev/shm",
    ]
    assert mount_at(doc, "/proc") == {
        "destination": "/proc",
        "type": "proc",
        "source": "proc",
        "options": ["nosuid", "noexec", "nodev"],
    }
    assert mount_at(doc, "/dev")["options"] == ["nosuid", "strictatime", "mode=755", "size=65536k"]
    assert mount_at(doc, "/dev/pts")["options"] == [
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
        "gid=5",
    ]
    assert mount_at(doc, "/dev/mqueue")["type"] == "mqueue"
    assert mount_at(doc, "/sys")["options"][-1] == "ro"
    assert mount_at(doc, "/sys/fs/cgroup")["type"] == "cgroup"
    assert mount_at(doc, "/sys/fs/cgroup")["options"][-1] == "ro"
    assert "/run" not in destinations(doc)


def test_pod_files_and_shm(env: Path) -> None:
    doc = build(env)
    for name, dst in (("hostname", "/etc/hostname"), ("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")):
        assert mount_at(doc, dst) == {
            "destination": dst,
            "type": "bind",
            "source": str(env / "pod" / name),
            "options": ["rbind", "rprivate", "rw"],
        }
    assert mount_at(doc, "/dev/shm") == {
        "destination": "/dev/shm",
        "type": "bind",
        "source": str(env / "shm"),
        "options": ["rbind", "rprivate", "rw"],
    }
    # the bind mounts come after the default ones they sit on
    assert destinations(doc).index("/dev/shm") > destinations(doc).index("/dev")


def test_pod_files_read_only_with_read_only_rootfs(env: Path) -> None:
    doc = build(env, cc(linux=sec(readonly_rootfs=True)))
    assert doc["root"]["readonly"] is True
    for dst in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"):
        assert mount_at(doc, dst)["options"][-1] == "ro"
    assert mount_at(doc, "/dev/shm")["options"][-1] == "rw"


def test_host_shm_when_empty(env: Path) -> None:
    assert mount_at(build(env, shm=""), "/dev/shm")["source"] == "/dev/shm"


def test_missing_pod_files_skipped(env: Path) -> None:
    (env / "pod" / "hostname").unlink()
    doc = build(env, shm=str(env / "missing-shm"))
    assert "/etc/hostname" not in destinations(doc)
    # without the pod's /dev/shm the default tmpfs stays
    assert mount_at(doc, "/dev/shm")["type"] == "tmpfs"


def test_cri_mount(env: Path) -> None:
    host = env / "data"
    host.mkdir()
    doc = build(env, cc(mounts=[pb.Mount(container_path="/data", host_path=str(host))]))
    assert mount_at(doc, "/data") == {
        "destination": "/data",
        "type": "bind",
        "source": str(host),
        "options": ["rbind", "rprivate", "rw"],
    }
    doc = build(env, cc(mounts=[pb.Mount(container_path="/data/", host_path=str(host), readonly=True)]))
    assert mount_at(doc, "/data")["options"] == ["rbind", "rprivate", "ro"]


def test_cri_mounts_sorted_by_depth(env: Path) -> None:
    for d in ("a", "b", "c"):
        (env / d).mkdir()
    mounts = [
        pb.Mount(container_path="/x/y/z", host_path=str(env / "a")),
        pb.Mount(container_path="/x", host_path=str(env / "b")),
        pb.Mount(container_path="/x/y", host_path=str(env / "c")),
    ]
    dsts = destinations(build(env, cc(mounts=mounts)))
    assert dsts.index("/x") < dsts.index("/x/y") < dsts.index("/x/y/z")
    # at equal depth the CRI mounts come before the pod's
    assert dsts.index("/x/y") < dsts.index("/etc/hosts")


def test_cri_mount_symlink_resolved(env: Path) -> None:
    real = env / "real"
    real.mkdir()
    (env / "link").symlink_to(real)
    doc = build(env, cc(mounts=[pb.Mount(container_path="/data", host_path=str(env / "link"))]))
    assert mount_at(doc, "/data")["source"] == str(real)


def test_cri_mount_missing_host_path_created(env: Path) -> None:
    missing = env / "new" / "dir"
    doc = build(env, cc(mounts=[pb.Mount(container_path="/data", host_path=str(missing))]))
    assert missing.is_dir()
    assert mount_at(doc, "/data")["source"] == str(missing)


def test_cri_mount_overrides_pod_files_and_defaults(env: Path) -> None:
    mine = env / "myhosts"
    mine.write_text("x")
    proc = env / "proc"
    proc.mkdir()
    mounts = [
        pb.Mount(container_path="/etc/hosts", host_path=str(mine)),
        pb.Mount(container_path="/proc", host_path=str(proc)),
    ]
    doc = build(env, cc(mounts=mounts))
    assert mount_at(doc, "/etc/hosts")["source"] == str(mine)
    assert mount_at(doc, "/proc")["type"] == "bind"


def test_cri_dev_mount_replaces_all_of_dev(env: Path) -> None:
    dev = env / "fakedev"
    dev.mkdir()
    doc = build(env, cc(mounts=[pb.Mount(container_path="/dev", host_path=str(dev))]))
    # the default /dev/pts, /dev/mqueue go; the pod's /dev/shm is a supplied mount and stays (containerd)
    assert [d for d in destinations(doc) if d.startswith("/dev")] == ["/dev", "/dev/shm"]


def test_cri_mount_options(env: Path) -> None:
    (env / "d").mkdir()
    m = pb.Mount(container_path="/d", host_path=str(env / "d"), mount_options=["noexec", "nosuid", "nodev"])
    assert mount_at(build(env, cc(mounts=[m])), "/d")["options"] == [
        "rbind",
        "rprivate",
        "rw",
        "noexec",
        "nosuid",
        "nodev",
    ]
    bad = pb.Mount(container_path="/d", host_path=str(env / "d"), mount_options=["remount"])
    with pytest.raises(InvalidArgument, match="remount"):
        build(env, cc(mounts=[bad]))


@pytest.mark.parametrize(
    ("mount", "match"),
    [
        (pb.Mount(container_path="/d", host_path=""), "no host_path"),
        (pb.Mount(container_path="/d", image=pb.ImageSpec(image="busybox")), "image volume"),
        (pb.Mount(container_path="rel", host_path="/tmp"), "absolute"),
        (pb.Mount(container_path="/d", host_path="/tmp", uidMappings=[pb.IDMapping(length=1)]), "user namespaces"),
    ],
)
def test_cri_mount_rejected(env: Path, mount: pb.Mount, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        build(env, cc(mounts=[mount]))


def test_image_volumes_ignored(env: Path) -> None:
    doc = build(env, cc(), image={"config": {"Cmd": ["sh"], "Volumes": {"/var/lib/data": {}}}})
    assert "/var/lib/data" not in destinations(doc)


def test_recursive_read_only(env: Path) -> None:
    (env / "d").mkdir()
    rw = pb.Mount(container_path="/d", host_path=str(env / "d"), recursive_read_only=True)
    with pytest.raises(InvalidArgument, match="conflicts with RW"):
        build(env, cc(mounts=[rw]))
    slave = pb.Mount(
        container_path="/d",
        host_path=str(env / "d"),
        readonly=True,
        recursive_read_only=True,
        propagation=pb.PROPAGATION_HOST_TO_CONTAINER,
    )
    with pytest.raises(InvalidArgument, match="private propagation"):
        build(env, cc(mounts=[slave]))
    good = pb.Mount(container_path="/d", host_path=str(env / "d"), readonly=True, recursive_read_only=True)
    with pytest.raises(InvalidArgument, match="recursive read-only mounts are not supported by this runtime handler"):
        build(env, cc(mounts=[good]))
    doc = build(env, cc(mounts=[good]), rro_supported=True)
    assert mount_at(doc, "/d")["options"] == ["rbind", "rprivate", "rro"]


@pytest.fixture
def mountinfo(env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake mount table: env/shared is a shared mount, env/slave a slave one, the rest private."""
    for d in ("shared", "slave", "private"):
        (env / d / "sub").mkdir(parents=True)
    path = env / "mountinfo"
    path.write_text(
        "1 0 8:1 / / rw - ext4 /dev/sda rw\n"
        f"2 1 0:1 / {env}/shared rw shared:7 - tmpfs t rw\n"
        f"3 1 0:2 / {env}/slave rw master:7 - tmpfs t rw\n"
        f"4 1 0:3 / {env}/private rw - tmpfs t rw\n"
        f"5 1 0:4 / {env}/sha\\040red rw shared:9 - tmpfs t rw\n"
    )
    monkeypatch.setattr(HOST, "mountinfo", str(path))
    return path


def test_propagation(env: Path, mountinfo: Path) -> None:
    bidir = pb.Mount(
        container_path="/b", host_path=str(env / "shared" / "sub"), propagation=pb.PROPAGATION_BIDIRECTIONAL
    )
    h2c = pb.Mount(container_path="/h", host_path=str(env / "slave"), propagation=pb.PROPAGATION_HOST_TO_CONTAINER)
    doc = build(env, cc(mounts=[h2c]))
    assert mount_at(doc, "/h")["options"] == ["rbind", "rslave", "rw"]
    assert doc["linux"]["rootfsPropagation"] == "rslave"
    doc = build(env, cc(mounts=[h2c, bidir]))
    assert mount_at(doc, "/b")["options"] == ["rbind", "rshared", "rw"]
    assert doc["linux"]["rootfsPropagation"] == "rshared"
    assert "rootfsPropagation" not in build(env)["linux"]


def test_propagation_needs_a_propagating_source(env: Path, mountinfo: Path) -> None:
    for prop, src in (
        (pb.PROPAGATION_BIDIRECTIONAL, "slave"),
        (pb.PROPAGATION_BIDIRECTIONAL, "private"),
        (pb.PROPAGATION_HOST_TO_CONTAINER, "private/sub"),
    ):
        m = pb.Mount(container_path="/m", host_path=str(env / src), propagation=prop)
        with pytest.raises(InvalidArgument, match="mount propagation"):
            build(env, cc(mounts=[m]))
    ok = pb.Mount(container_path="/m", host_path=str(env / "shared"), propagation=pb.PROPAGATION_HOST_TO_CONTAINER)
    build(env, cc(mounts=[ok]))


def test_privileged_sysfs_and_cgroup_writable(env: Path) -> None:
    doc = build(env, cc(linux=sec(privileged=True)), sandbox=pod(privileged=True))
    assert mount_at(doc, "/sys")["options"][-1] == "rw"
    assert mount_at(doc, "/sys/fs/cgroup")["options"][-1] == "rw"


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


def test_host_capability_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real ones, not the fixture's
    known = HOST.known_capabilities()
    assert known[:3] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"]
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert len(known) == min(int(f.read()) + 1, len(CAPABILITIES))
    assert HOST.own_capabilities() <= frozenset(CAPABILITIES)


# ---------------------------------------------------------------- privileged, masked paths, devices


def test_privileged_needs_privileged_pod(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="no privileged container allowed in sandbox"):
        build(env, cc(linux=sec(privileged=True)))


def test_privileged(env: Path) -> None:
    config = cc(linux=sec(privileged=True, seccomp=pb.SecurityProfile(), masked_paths=["/proc/kcore"]))
    doc = build(env, config, sandbox=pod(privileged=True))
    linux = doc["linux"]
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux and "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    paths = {d["path"] for d in linux["devices"]}
    assert "/dev/null" in paths and "/dev/console" not in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/", "/dev/fd/")) for p in paths)
    null = next(d for d in linux["devices"] if d["path"] == "/dev/null")
    assert (null["type"], null["major"], null["minor"], null["fileMode"]) == ("c", 1, 3, 0o666)


def test_default_masked_and_readonly_paths(env: Path) -> None:
    linux = build(env)["linux"]
    assert linux["maskedPaths"] == list(DEFAULT_MASKED_PATHS)
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert {"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list"} <= set(linux["maskedPaths"])


def test_cri_masked_and_readonly_paths_exactly(env: Path) -> None:
    linux = build(env, cc(linux=sec(masked_paths=["/bin/ls"], readonly_paths=["/tmp"])))["linux"]
    assert linux["maskedPaths"] == ["/bin/ls"]
    assert linux["readonlyPaths"] == ["/tmp"]


def test_default_device_rules(env: Path) -> None:
    linux = build(env)["linux"]
    rules = linux["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["type"], r["major"], r.get("minor")) for r in rules[1:] if r["allow"]}
    assert {
        ("c", 1, 3),
        ("c", 1, 5),
        ("c", 1, 7),
        ("c", 1, 8),
        ("c", 1, 9),
        ("c", 5, 0),
        ("c", 5, 2),
        ("c", 136, None),
    } <= allowed
    assert "devices" not in linux


def test_cri_device(env: Path) -> None:
    config = cc(devices=[pb.Device(host_path="/dev/null", container_path="/dev/mynull", permissions="rw")])
    linux = build(env, config)["linux"]
    (dev,) = linux["devices"]
    assert (dev["path"], dev["type"], dev["major"], dev["minor"]) == ("/dev/mynull", "c", 1, 3)
    assert {"fileMode", "uid", "gid"} <= set(dev)
    assert linux["resources"]["devices"][-1] == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}


def test_cri_device_symlink_and_default_permissions(env: Path) -> None:
    (env / "nul").symlink_to("/dev/null")
    linux = build(env, cc(devices=[pb.Device(host_path=str(env / "nul"), container_path="/dev/x")]))["linux"]
    assert linux["devices"][0]["major"] == 1 and linux["resources"]["devices"][-1]["access"] == "rwm"


def test_cri_device_directory(env: Path) -> None:
    d = env / "devdir"
    d.mkdir()
    (d / "link").symlink_to("/dev/null")  # not a device node itself: skipped, like containerd
    (d / "file").write_text("")
    if os.geteuid() == 0:
        os.mknod(d / "zero", 0o600 | 0o020000, os.makedev(1, 5))
    linux = build(env, cc(devices=[pb.Device(host_path=str(d), container_path="/dev/in", permissions="r")]))["linux"]
    if os.geteuid() == 0:
        assert [(x["path"], x["minor"]) for x in linux["devices"]] == [("/dev/in/zero", 5)]
    else:
        assert "devices" not in linux


@pytest.mark.parametrize(
    ("device", "match"),
    [
        (pb.Device(host_path="/nonexistent/dev", container_path="/dev/x"), "does not exist"),
        (pb.Device(host_path="/etc/hostname", container_path="/dev/x"), "not a device"),
        (pb.Device(host_path="/dev/null", container_path="/dev/x", permissions="rwx"), "permissions"),
        (pb.Device(host_path="/dev/null", container_path="dev/x"), "absolute"),
    ],
)
def test_cri_device_errors(env: Path, device: pb.Device, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        build(env, cc(devices=[device]))


def test_cdi_devices_not_silently_dropped(env: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"vendor\.com/gpu=0"):
        build(env, cc(CDI_devices=[pb.CDIDevice(name="vendor.com/gpu=0")]))


def test_seccomp_default_resolved_against_capabilities(env: Path) -> None:
    doc = build(env, cc(linux=sec(seccomp=pb.SecurityProfile())))
    names = {n for r in doc["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert "sethostname" not in names and "mount" not in names
    config = cc(linux=sec(seccomp=pb.SecurityProfile(), capabilities=pb.Capability(add_capabilities=["SYS_ADMIN"])))
    names = {n for r in build(env, config)["linux"]["seccomp"]["syscalls"] for n in r["names"]}
    assert {"sethostname", "mount"} <= names
    assert "seccomp" not in build(env)["linux"]


# ---------------------------------------------------------------- namespaces


def ns_of(doc: dict[str, Any]) -> dict[str, str | None]:
    return {n["type"]: n.get("path") for n in doc["linux"]["namespaces"]}


def test_pod_namespaces_joined(env: Path) -> None:
    assert ns_of(build(env)) == {
        "mount": None,
        "network": "/run/ns/net",
        "ipc": "/run/ns/ipc",
        "uts": "/run/ns/uts",
        "pid": None,
    }


def test_host_namespaces_when_absent(env: Path) -> None:
    assert ns_of(build(env, namespaces={"ipc": "/run/ns/ipc"})) == {"mount": None, "ipc": "/run/ns/ipc", "pid": None}


def nsopts(**kw: Any) -> pb.LinuxContainerConfig:
    return sec(namespace_options=pb.NamespaceOption(**kw))


def test_pid_namespace_modes(env: Path) -> None:
    assert "pid" not in ns_of(build(env, cc(linux=nsopts(pid=pb.NODE)), pid_namespace="/proc/1/ns/pid"))
    assert ns_of(build(env, cc(linux=nsopts(pid=pb.CONTAINER)), pid_namespace="/proc/9/ns/pid"))["pid"] is None
    assert ns_of(build(env, cc(linux=nsopts(pid=pb.POD)), pid_namespace="/proc/9/ns/pid"))["pid"] == "/proc/9/ns/pid"
    assert (
        ns_of(build(env, cc(linux=nsopts(pid=pb.TARGET, target_id="x")), pid_namespace="/proc/7/ns/pid"))["pid"]
        == "/proc/7/ns/pid"
    )
    # a container left at POD in a host-PID pod
    host_pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(pid=pb.NODE))
        ),
    )
    assert "pid" not in ns_of(build(env, cc(), sandbox=host_pod))
    with pytest.raises(InvalidArgument, match="TARGET"):
        build(env, cc(linux=nsopts(pid=pb.TARGET, target_id="x")))


def test_cgroup_namespace_only_on_v2_and_unprivileged(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "cgroup" not in ns_of(build(env))
    monkeypatch.setattr(HOST, "cgroup_v2", lambda: True)
    assert "cgroup" in ns_of(build(env))
    assert "cgroup" not in ns_of(build(env, cc(linux=sec(privileged=True)), sandbox=pod(privileged=True)))


def test_user_namespaces_rejected(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="user namespaces are not supported"):
        build(env, cc(linux=nsopts(userns_options=pb.UserNamespace(mode=pb.POD))))
    build(env, cc(linux=nsopts(userns_options=pb.UserNamespace(mode=pb.NODE))))


# ---------------------------------------------------------------- resources


def res(**kw: Any) -> pb.ContainerConfig:
    return cc(linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(**kw)))


def test_cpu_and_memory(env: Path) -> None:
    r = build(
        env,
        res(
            cpu_period=100000,
            cpu_quota=50000,
            cpu_shares=512,
            cpuset_cpus="0-1",
            cpuset_mems="0",
            memory_limit_in_bytes=1 << 26,
        ),
    )["linux"]["resources"]
    assert r["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert r["memory"] == {"limit": 1 << 26}


def test_no_resources(env: Path) -> None:
    r = build(env, res())["linux"]["resources"]
    assert set(r) == {"devices"}


def test_swap(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HOST, "swap_available", lambda: True)
    assert build(env, res(memory_limit_in_bytes=1000))["linux"]["resources"]["memory"] == {"limit": 1000, "swap": 1000}
    memory = build(env, res(memory_limit_in_bytes=1000, memory_swap_limit_in_bytes=3000))["linux"]["resources"][
        "memory"
    ]
    assert memory == {"limit": 1000, "swap": 3000}


def test_hugepages(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = res(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=1 << 30)])
    assert "hugepageLimits" not in build(env, config)["linux"]["resources"]
    monkeypatch.setattr(HOST, "hugetlb_available", lambda: True)
    assert build(env, config)["linux"]["resources"]["hugepageLimits"] == [{"pageSize": "2MB", "limit": 1 << 30}]
    with pytest.raises(InvalidArgument, match="hugepage"):
        build(env, res(hugepage_limits=[pb.HugepageLimit(page_size="2M", limit=1)]))


def test_unified(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = res(unified={"memory.high": "1000000"})
    with pytest.raises(InvalidArgument, match="cgroup v2"):
        build(env, config)
    monkeypatch.setattr(HOST, "cgroup_v2", lambda: True)
    assert build(env, config)["linux"]["resources"]["unified"] == {"memory.high": "1000000"}


@pytest.mark.parametrize("kw", [{"cpu_shares": -1}, {"cpu_quota": -2}, {"memory_limit_in_bytes": -5}])
def test_bad_resources(env: Path, kw: dict[str, int]) -> None:
    with pytest.raises(InvalidArgument):
        build(env, res(**kw))


def test_cgroups_path(env: Path) -> None:
    assert build(env)["linux"]["cgroupsPath"] == "/kubepods/pod1/c1"
    assert "cgroupsPath" not in build(env, cgroups_path="")["linux"]


def test_update_resources(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HOST, "hugetlb_available", lambda: True)
    config = res(
        cpu_shares=512,
        cpu_quota=20000,
        memory_limit_in_bytes=1 << 26,
        hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=2)],
    )
    doc = build(env, config)
    before = json.dumps(doc)
    new = update_resources(
        doc,
        pb.LinuxContainerResources(
            cpu_quota=40000, memory_limit_in_bytes=1 << 27, hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4)]
        ),
    )
    assert json.dumps(doc) == before  # the spec itself is left alone
    assert new["cpu"] == {"shares": 512, "quota": 40000}
    assert new["memory"] == {"limit": 1 << 27}
    assert new["hugepageLimits"] == [{"pageSize": "2MB", "limit": 4}]
    assert new["devices"] == doc["linux"]["resources"]["devices"]
    assert update_resources({}, pb.LinuxContainerResources(cpu_period=1000)) == {"cpu": {"period": 1000}}
    with pytest.raises(InvalidArgument):
        update_resources(doc, pb.LinuxContainerResources(unified={"a": "b"}))


# ---------------------------------------------------------------- sysctls, annotations, root


def with_sysctls(sysctls: dict[str, str], **sc: Any) -> pb.PodSandboxConfig:
    p = pod(**sc)
    p.linux.sysctls.update(sysctls)
    return p


def test_sysctls(env: Path) -> None:
    sysctls = {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1", "net/ipv4/ip_forward": "1"}
    doc = build(env, sandbox=with_sysctls(sysctls))
    assert doc["linux"]["sysctl"] == {
        "net.ipv4.ip_unprivileged_port_start": "0",
        "kernel.shm_rmid_forced": "1",
        "net.ipv4.ip_forward": "1",
    }
    assert "sysctl" not in build(env)["linux"]
    # a slash-form key whose parts hold dots cannot be spelled for runc: the pod already set it
    doc = build(env, sandbox=with_sysctls({"net/ipv4/conf/eth0.100/forwarding": "1"}))
    assert "sysctl" not in doc["linux"]


def test_sysctls_need_the_pods_namespaces(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="net"):
        build(env, sandbox=with_sysctls({"net.core.somaxconn": "1024"}), namespaces={"ipc": "/run/ns/ipc"})
    with pytest.raises(InvalidArgument, match="ipc"):
        build(env, sandbox=with_sysctls({"kernel.msgmax": "1"}), namespaces={"net": "/run/ns/net"})
    with pytest.raises(InvalidArgument, match="not namespaced"):
        build(env, sandbox=with_sysctls({"vm.swappiness": "1"}))


def test_annotations(env: Path) -> None:
    config = cc(annotations={"my": "note", "io.kubernetes.cri.container-type": "spoofed"})
    ann = build(env, config)["annotations"]
    assert ann == {
        "my": "note",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.sandbox-id": "sb1",
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.kubernetes.cri.sandbox-uid": "pod-uid",
        "io.kubernetes.cri.image-name": "docker.io/library/busybox:latest",
    }
    assert (
        build(env, config, image_name="busybox@sha256:x")["annotations"]["io.kubernetes.cri.image-name"]
        == "busybox@sha256:x"
    )


def test_root_and_version(env: Path) -> None:
    doc = build(env)
    assert doc["root"] == {"path": str(env / "rootfs"), "readonly": False}
    assert doc["ociVersion"].startswith("1.")


# ---------------------------------------------------------------- runc accepts it (root only)


def _runc_run(bundle: Path, cid: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runc", "--root", str(bundle / "state"), "run", "--bundle", str(bundle), cid],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="runc needs root")
@pytest.mark.skipif(shutil.which("runc") is None or not os.path.exists("/bin/busybox"), reason="needs runc and busybox")
def test_runc_runs_the_spec(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real host: cgroup mode, capabilities crid holds
    rootfs = env / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(exist_ok=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for tool in ("sh", "ls", "id", "cat", "echo", "sleep", "true", "grep", "hostname", "unshare", "kill"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    with open("/proc/self/oom_score_adj") as f:
        own_adj = int(f.read())
    script = (
        "id; grep -E '^(CapEff|Seccomp):' /proc/self/status; "
        "hostname blocked 2>/dev/null && echo HOSTNAME-CHANGED || echo hostname-denied; "
        "unshare -n true 2>/dev/null && echo UNSHARE-OK || echo unshare-denied; "
        "trap 'echo trapped' USR1; kill -USR1 $$; ls /etc; cat /etc/hostname"
    )
    config = cc(
        command=["sh", "-c", script],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20, cpu_shares=256),
            security_context=pb.LinuxContainerSecurityContext(
                seccomp=pb.SecurityProfile(), run_as_user=pb.Int64Value(value=0)
            ),
        ),
    )
    cid = f"crid-spec-test-{uuid.uuid4().hex[:8]}"
    doc = build_spec(
        make(
            env,
            config,
            image={"config": {"Env": ["PATH=/bin"]}},
            namespaces={},
            pid_namespace="",
            cgroups_path=f"/{cid}",
            min_oom_score_adj=own_adj,
        )
    )
    check_oci(doc)
    # test-only: a private UTS namespace so that a failing seccomp filter could not rename the host
    doc["linux"]["namespaces"].append({"type": "uts"})
    (env / "config.json").write_text(json.dumps(doc))
    try:
        run = _runc_run(env, cid)
        assert run.returncode == 0, run.stderr
        out = run.stdout
        assert "uid=0(root) gid=0(root)" in out
        assert "CapEff:\t00000000a80425fb" in out  # exactly the 14 default capabilities
        assert "Seccomp:\t2" in out
        assert "hostname-denied" in out and "unshare-denied" in out
        assert "trapped" in out and "passwd" in out and "hostname\n" in out
    finally:
        subprocess.run(
            ["runc", "--root", str(env / "state"), "delete", "--force", cid], capture_output=True, timeout=30
        )
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            path = os.path.join("/sys/fs/cgroup", hierarchy, cid)
            if os.path.isdir(path):
                os.rmdir(path)
        if os.path.isdir(f"/sys/fs/cgroup/{cid}"):
            os.rmdir(f"/sys/fs/cgroup/{cid}")
