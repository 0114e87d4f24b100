"""Image volumes (KEP-4639) end to end: a data image made by the tests' builder
mounted read-only into busybox containers under runc, with sub-paths, shared
by the containers of a pod, held while mounted, gone with the pod."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.container_pod import GROUP, PASSWD, Pod
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support.cni_net import Network
from tests.support.registry import Registry

Env = tuple[CridProcess, str, str, str]  # daemon, busybox ref, data image ref, data image id

DATA = ob.Image(
    [
        ob.Layer([ob.Dir("data"), ob.File("data/base.txt", b"from the lower layer\n")]),
        ob.Layer(
            [
                ob.File("data/top.txt", b"from the upper layer\n"),
                ob.Dir("data/nested"),
                ob.File("data/nested/deep.txt", b"deep\n"),
                ob.Symlink("inside", "data/nested"),  # a sub-path through a link stays in the image
                ob.Symlink("escape", "/../../../../../../etc"),  # would be the host's /etc if followed outside
                ob.File("lonely.txt", b"a file\n"),
            ]
        ),
    ],
    ob.ImageConfig(cmd=None),
)


@pytest.fixture(scope="module")
def env(e2e_base: Path) -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="imgvol", dir=e2e_base))
    network = Network(base / "net", 206)
    busybox = ob.Image([ob.busybox_layer("gzip", applets="all", passwd=PASSWD, group=GROUP)])
    with Registry(base / "reg") as reg:
        reg.push("e2e/busybox", "1", busybox)
        reg.push("e2e/data", "1", DATA)
        d = CridProcess(base, settings=network.settings()).start()
        refs = [f"{reg.host}/e2e/busybox:1", f"{reg.host}/e2e/data:1"]
        ids = [d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=r))).image_ref for r in refs]
        try:
            yield d, refs[0], refs[1], ids[1]
        finally:
            d.remove_all_pods()
            d.stop()
            network.cleanup()


def volume(image: str, path: str = "/mnt/vol", sub: str = "", readonly: bool = True, **kw: Any) -> pb.Mount:
    return pb.Mount(container_path=path, image=pb.ImageSpec(image=image), image_sub_path=sub, readonly=readonly, **kw)


def volume_mounts(d: CridProcess, pod_id: str) -> list[str]:
    top = os.path.join(d.state, "image-volumes", pod_id)
    with open("/proc/self/mountinfo") as f:
        return [line.split()[4] for line in f if line.split()[4].startswith(top)]


def out(p: Pod, cid: str, cmd: list[str]) -> tuple[int, str]:
    r = p.exec(cid, cmd)
    return r.exit_code, (r.stdout + r.stderr).decode()


def test_mounted_read_only_and_reported(env: Env) -> None:
    d, busybox, data, data_id = env
    p = Pod(d, busybox, "imgvol-ro")
    try:
        cid = p.run("reader", ["sleep", "3600"], mounts=[volume(data)])
        assert out(p, cid, ["cat", "/mnt/vol/data/base.txt", "/mnt/vol/data/top.txt"]) == (
            0,
            "from the lower layer\nfrom the upper layer\n",
        )
        code, text = out(p, cid, ["touch", "/mnt/vol/data/new"])
        assert code != 0 and "Read-only file system" in text
        # the container's own root stays writable
        assert out(p, cid, ["touch", "/tmp/ok"])[0] == 0
        mounts = [m for m in p.status(cid).mounts if m.container_path == "/mnt/vol"]
        assert len(mounts) == 1 and mounts[0].image.image == data and mounts[0].image.image_ref == data_id
        assert len(volume_mounts(d, p.id)) == 1
    finally:
        p.remove()
    assert volume_mounts(d, p.id) == [] and not os.path.exists(os.path.join(d.state, "image-volumes", p.id))


def test_sub_paths_stay_inside_the_image(env: Env) -> None:
    d, busybox, data, _ = env
    p = Pod(d, busybox, "imgvol-sub")
    try:
        mounts = [
            volume(data, "/mnt/a", sub="data/nested"),
            volume(data, "/mnt/b", sub="inside"),  # a symlink in the image, followed inside it
            volume(data, "/mnt/file", sub="lonely.txt"),
        ]
        cid = p.run("sub", ["sleep", "3600"], mounts=mounts)
        assert out(p, cid, ["cat", "/mnt/a/deep.txt", "/mnt/b/deep.txt", "/mnt/file"]) == (0, "deep\ndeep\na file\n")
        assert out(p, cid, ["ls", "/mnt/a/base.txt"])[0] != 0
        # two containers of the pod, three mounts of the same image: one mount of it on the host
        cid2 = p.run("second", ["sleep", "3600"], mounts=[volume(data)])
        assert out(p, cid2, ["cat", "/mnt/vol/lonely.txt"]) == (0, "a file\n")
        assert len(volume_mounts(d, p.id)) == 1
        for sub in ("not-there", "escape", "escape/passwd", "data/base.txt/x"):
            with pytest.raises(grpc.RpcError) as err:
                p.create(f"bad-{len(sub)}", ["true"], mounts=[volume(data, sub=sub)])
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, sub
            assert "does not exist in image" in (err.value.details() or "")
    finally:
        p.remove()
    assert volume_mounts(d, p.id) == []


@pytest.mark.parametrize(
    ("mount", "code", "words"),
    [
        (lambda data: volume(data, readonly=False), grpc.StatusCode.INVALID_ARGUMENT, "must be read-only"),
        (lambda data: volume(data, host_path="/tmp"), grpc.StatusCode.INVALID_ARGUMENT, "both an image"),
        (lambda data: volume("e2e/never-pulled:1"), grpc.StatusCode.NOT_FOUND, "pull it first"),
    ],
    ids=["writable", "with-host-path", "not-pulled"],
)
def test_refused(env: Env, mount: object, code: grpc.StatusCode, words: str) -> None:
    d, busybox, data, _ = env
    p = Pod(d, busybox, "imgvol-bad")
    try:
        with pytest.raises(grpc.RpcError) as err:
            p.create("bad", ["true"], mounts=[mount(data)])  # type: ignore[operator]
        assert err.value.code() == code and words in (err.value.details() or "")
        assert not d.client.runtime.ListContainers(pb.ListContainersRequest()).containers
        assert volume_mounts(d, p.id) == []
    finally:
        p.remove()


def layer_dirs(d: CridProcess) -> set[str]:
    return {n for n in os.listdir(os.path.join(d.root, "snapshots")) if n.isdigit()}


def test_image_removed_while_mounted_stays_until_the_pod_goes(env: Env) -> None:
    d, busybox, data, data_id = env
    p = Pod(d, busybox, "imgvol-gc")
    before = layer_dirs(d)
    try:
        cid = p.run("reader", ["sleep", "3600"], mounts=[volume(data)])
        d.client.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=data_id)))
        listed = d.client.image.ListImages(pb.ListImagesRequest()).images
        assert data_id not in {i.id for i in listed}
        assert layer_dirs(d) == before  # its layers are held by the mount
        assert out(p, cid, ["cat", "/mnt/vol/data/top.txt"]) == (0, "from the upper layer\n")
        with pytest.raises(grpc.RpcError) as err:  # a new volume needs the image again
            p.create("late", ["true"], mounts=[volume(data)])
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        d.stop()  # a restart keeps holding them
        d.start()
        assert layer_dirs(d) == before
        assert out(p, cid, ["cat", "/mnt/vol/data/base.txt"]) == (0, "from the lower layer\n")
    finally:
        p.remove()
    assert volume_mounts(d, p.id) == []
    assert len(before - layer_dirs(d)) == 2  # the pod gone, the removed image's two layers go too
    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=data)))  # for the other tests
