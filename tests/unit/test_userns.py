"""User namespaces: the mapping's checks, the OCI maps, reachability, and the
mount-API wrappers' and idmapped clones' errors (on a fake libc)."""

import ctypes
import errno
import os
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import FailedPrecondition, InvalidArgument
from cri.host import HOST
from cri.runtime import idmap, userns
from cri.runtime.pod_config import validate

MAP = pb.IDMapping(container_id=0, host_id=100000, length=65536)


def opts(mode: Any = pb.POD, uids: Any = (MAP,), gids: Any = (MAP,), **kw: Any) -> pb.NamespaceOption:
    return pb.NamespaceOption(userns_options=pb.UserNamespace(mode=mode, uids=uids, gids=gids), **kw)


def test_pod_mapping() -> None:
    ids = userns.mapping(opts())
    assert ids == userns.Mapping(userns.IdMap(0, 100000, 65536), userns.IdMap(0, 100000, 65536))
    assert ids.uid.line() == "0 100000 65536\n" and ids.uid.to_host(0) == 100000
    assert userns.oci_maps(ids)["uidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert userns.mapping(opts(pb.NODE, (), ())) is None
    assert userns.mapping(pb.NamespaceOption()) is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (opts(pb.CONTAINER), "mode CONTAINER is not supported"),
        (opts(pb.TARGET), "mode TARGET is not supported"),
        (opts(uids=(MAP, MAP)), "exactly one uid mapping, got 2"),
        (opts(gids=()), "exactly one gid mapping, got 0"),
        (opts(uids=(pb.IDMapping(container_id=1, host_id=1000, length=10),)), "start at container id 0"),
        (opts(gids=(pb.IDMapping(container_id=0, host_id=1000, length=0),)), "length 0"),
        (opts(uids=(pb.IDMapping(container_id=0, host_id=2**32 - 5, length=10),)), "overflows"),
        (opts(network=pb.NODE), "host's network namespace"),
        (opts(pid=pb.NODE), "host's PID namespace"),
        (opts(ipc=pb.NODE), "host's IPC namespace"),
    ],
)
def test_refused_mappings(options: pb.NamespaceOption, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        userns.mapping(options)
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"),
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(namespace_options=options)),
    )
    with pytest.raises(InvalidArgument, match=match):
        validate(config)  # RunPodSandbox refuses it before it reserves anything


def test_check_reachable(tmp_path: Path) -> None:
    userns.check_reachable("/usr/bin")
    (tmp_path / "shut").mkdir(mode=0o700)
    with pytest.raises(FailedPrecondition, match="shut is not searchable by others"):
        userns.check_reachable(str(tmp_path / "shut" / "state"))


class FakeLibc:
    """syscall() of the mount API failing with a given errno for one syscall number."""

    def __init__(self, fail: int, err: int) -> None:
        self.fail, self.err, self.calls = fail, err, []  # type: ignore[var-annotated]

    def syscall(self, nr: int, *args: Any) -> int:
        self.calls.append(nr)
        if nr == self.fail:
            ctypes.set_errno(self.err)
            return -1
        return 7 if nr == 428 else 0


def test_mount_api_errors_name_the_call_and_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HOST, "libc", FakeLibc(428, errno.ENOENT))
    with pytest.raises(OSError, match="clone mount /nowhere: No such file") as exc:
        HOST.open_tree_clone("/nowhere")
    assert exc.value.errno == errno.ENOENT
    monkeypatch.setattr(HOST, "libc", FakeLibc(442, errno.EINVAL))
    with pytest.raises(OSError, match="idmap /x: Invalid argument"):
        HOST.idmap_tree(7, 8, "idmap /x")
    monkeypatch.setattr(HOST, "libc", FakeLibc(429, errno.EBUSY))
    with pytest.raises(OSError, match="attach mount at /t: Device or resource busy"):
        HOST.move_mount(7, "/t")


def test_clone_refused_by_the_filesystem_names_the_mount(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    libc = FakeLibc(442, errno.EINVAL)
    monkeypatch.setattr(HOST, "libc", libc)
    monkeypatch.setattr(os, "close", lambda fd: None)  # the fake's fd 7 is no real one
    (tmp_path / "ns").write_text("")
    monkeypatch.setattr(os.path, "isdir", lambda p: True)
    with pytest.raises(FailedPrecondition, match=r"idmapped mount of /srv/vol .*does not support idmapped mounts"):
        idmap.clone("/srv/vol", str(tmp_path / "t"), str(tmp_path / "ns"))
    assert libc.calls == [428, 442] and not (tmp_path / "t").exists()  # nothing attached


def test_release_never_deletes_through_an_attached_mount(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mapdir = tmp_path / "idmap"
    (mapdir / "b0").mkdir(parents=True)
    (mapdir / "b0" / "data").write_text("a volume's file")
    info = tmp_path / "mountinfo"
    info.write_text(f"99 1 0:5 / {mapdir}/b0 rw - ext4 /dev/vda rw\n")
    monkeypatch.setattr(HOST, "mountinfo", str(info))
    monkeypatch.setattr(HOST, "detach_mount", lambda p: None)  # a detach that did not take
    with pytest.raises(OSError, match="still attached"):
        idmap.release(str(mapdir))
    assert (mapdir / "b0" / "data").exists()
    info.write_text("")
    (mapdir / "b0" / "data").unlink()
    idmap.release(str(mapdir))
    assert not mapdir.exists()
    idmap.release(str(mapdir))  # gone already: fine


def test_infra_process_joins_the_pods_user_namespace() -> None:
    from cri.runtime import infra

    ids = userns.mapping(opts())
    assert ids is not None
    doc = infra.spec("/rootfs", {"user": "/run/ns/user", "net": "/run/ns/net"}, "", userns.oci_maps(ids))
    linux = doc["linux"]
    assert isinstance(linux, dict)
    assert {"type": "user", "path": "/run/ns/user"} in linux["namespaces"]
    assert linux["gidMappings"] == [{"containerID": 0, "hostID": 100000, "size": 65536}]


def test_a_child_that_cannot_unshare_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(userns, "_CHILD", "import sys\nsys.exit('unshare: Operation not permitted')\n")
    ids = userns.mapping(opts())
    assert ids is not None
    with pytest.raises(OSError, match="cannot create a user namespace: unshare: Operation not permitted"):
        userns.create(str(tmp_path), ["net"], "h", ids)
    assert list(tmp_path.iterdir()) == []  # nothing pinned


def test_mounts_under_reads_escaped_mount_points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "1 0 0:1 / / rw - ext4 /dev/vda rw\n"
        "2 1 0:2 / /run/c/idmap rw - tmpfs t rw\n"
        "3 1 0:3 / /run/c/idmap/b\\0400 rw - ext4 /dev/vda rw\n"
        "4 1 0:4 / /run/c/idmapped rw - ext4 /dev/vda rw\n"
    )
    monkeypatch.setattr(HOST, "mountinfo", str(info))
    assert idmap.mounts_under("/run/c/idmap") == ["/run/c/idmap/b 0", "/run/c/idmap"]
