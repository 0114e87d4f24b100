"""The spec's mounts: defaults, the pod's files and /dev/shm, CRI mounts, propagation, read-only."""

from pathlib import Path

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import HOST
from tests.unit.spec.helpers import build, cc, destinations, mount_at, pod, sec


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
        (
            pb.Mount(container_path="/d", host_path="/tmp", uidMappings=[pb.IDMapping(length=1)]),
            "per-mount uid/gid mappings",
        ),
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
