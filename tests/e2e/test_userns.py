"""User namespaces end to end (``hostUsers: false``): a pod in its own user
namespace, with crid's idmapped mounts of the image layers and the volumes."""

import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from cri import faults
from cri.api.v1 import api_pb2 as pb
from cri.runtime import idmap
from tests.e2e.container_pod import GROUP, PASSWD, Pod, log_text
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support.cni_net import Network
from tests.support.registry import Registry

HOST_ID, LENGTH = 100000, 65536
MAPPING = [pb.IDMapping(container_id=0, host_id=HOST_ID, length=LENGTH)]


def userns(mode: Any = pb.POD, uids: list[pb.IDMapping] = MAPPING, gids: list[pb.IDMapping] = MAPPING) -> dict:  # type: ignore[type-arg]
    opts = pb.NamespaceOption(userns_options=pb.UserNamespace(mode=mode, uids=uids, gids=gids))
    return {"security_context": pb.LinuxSandboxSecurityContext(namespace_options=opts)}


def container_linux() -> pb.LinuxContainerConfig:
    opts = pb.NamespaceOption(userns_options=pb.UserNamespace(mode=pb.POD, uids=MAPPING, gids=MAPPING))
    return pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(namespace_options=opts))


@pytest.fixture(scope="module")
def env(e2e_base: Path) -> Iterator[tuple[CridProcess, str, Path]]:
    """A daemon whose root and state dirs others may search (the pod's root holds no host capability)."""
    base = Path(tempfile.mkdtemp(prefix="userns", dir=e2e_base))
    for path in (e2e_base, base):
        path.chmod(0o711)
    network = Network(base / "net", 210)
    layer = ob.busybox_layer("gzip", applets="all", passwd=PASSWD, group=GROUP)
    image = ob.Image([layer], ob.ImageConfig(cmd=["sh"], env=["PATH=/bin"]))
    with Registry(base / "reg") as reg:
        reg.push("e2e/busybox", "1", image)
        d = CridProcess(base, settings=network.settings()).start()
        refused = [r["why"] for r in d.log_records("no user namespaces for this handler") if r["handler"] == "runc"]
        assert not refused, f"runc failed crid's user namespace probe: {refused}"
        ref = f"{reg.host}/e2e/busybox:1"
        d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
        try:
            yield d, ref, base
        finally:
            d.remove_all_pods()
            d.stop()
            network.cleanup()


def test_a_pod_in_its_own_user_namespace(env: tuple[CridProcess, str, Path], tmp_path: Path) -> None:
    d, image, base = env
    # a host volume, idmapped: its root-owned file is root's inside; one of an id the pod
    # does not map is nobody's, and root inside (no host capability) cannot read it at 0600
    vol = base / "vol"
    vol.mkdir(mode=0o755)
    (vol / "owned").write_text("hello\n")
    (vol / "secret").write_text("secret\n")
    (vol / "secret").chmod(0o600)
    os.chown(vol / "secret", 2 * HOST_ID, 2 * HOST_ID)
    pod = Pod(d, image, "userns-pod", **userns())
    try:
        mounts = [pb.Mount(container_path="/vol", host_path=str(vol))]
        script = (
            "id; cat /proc/self/uid_map; stat -c '%u:%g %n' / /bin/sh /etc/hosts /dev/shm /vol/owned /vol/secret;"
            " cat /vol/secret 2>/dev/null || echo denied; echo new > /bin/new; echo changed >> /etc/passwd; echo ok"
        )
        cid = pod.run("check", ["sh", "-c", script], mounts=mounts, linux=container_linux())
        st = pod.wait(cid)
        out = log_text(pod.logs / "check.log")
        assert st.exit_code == 0, out
        assert "uid=0(root) gid=0(root)" in out
        assert f"0 {HOST_ID} {LENGTH}" in " ".join(out.split())
        for path in ("/", "/bin/sh", "/etc/hosts", "/dev/shm", "/vol/owned"):
            assert f"0:0 {path}\n" in out, out
        assert "65534:65534 /vol/secret" in out and "denied" in out  # root inside is nobody outside
        assert out.endswith("ok\n")
        # on disk: the volume and the layers unchanged, the writes in the upper dir owned by the mapped root
        assert (vol / "owned").stat().st_uid == 0
        upper = Path(d.root) / "containers" / cid / "upper"
        assert (upper / "bin" / "new").stat().st_uid == HOST_ID
        assert (upper / "etc" / "passwd").stat().st_uid == HOST_ID
        snapshots = Path(d.root) / "snapshots"
        layers = [p for p in snapshots.glob("*/fs/etc/passwd")]
        assert layers and all(p.stat().st_uid == 0 and "changed" not in p.read_text() for p in layers)
        assert not any(snapshots.glob("*/fs/bin/new"))
        assert idmap.mounts_under(d.state)  # the bind clones, while the container exists
    finally:
        pod.remove()
    assert idmap.mounts_under(d.state) == [], "mounts left after the pod's removal"


@pytest.mark.parametrize(
    "opts",
    [
        userns(pb.CONTAINER),
        userns(pb.TARGET),
        userns(uids=MAPPING * 2),
        userns(gids=[]),
        userns(uids=[pb.IDMapping(container_id=1, host_id=HOST_ID, length=LENGTH)]),
        userns(uids=[pb.IDMapping(container_id=0, host_id=HOST_ID, length=0)]),
        userns(uids=[pb.IDMapping(container_id=0, host_id=2**32 - 2, length=10)]),
    ],
)
def test_unsupported_modes_and_malformed_mappings_are_refused(env: tuple[CridProcess, str, Path], opts: dict) -> None:  # type: ignore[type-arg]
    d, image, _ = env
    with pytest.raises(grpc.RpcError) as err:
        Pod(d, image, "userns-bad", **opts)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status_advertises_user_namespaces(env: tuple[CridProcess, str, Path]) -> None:
    d, _, _ = env
    handlers = d.client.runtime.Status(pb.StatusRequest()).runtime_handlers
    advertised = {h.name: h.features.user_namespaces for h in handlers}
    assert advertised["runc"] and advertised[""]  # the default handler is runc
    # a handler whose probe failed (crun 1.8 refuses hybrid cgroups) is not advertised, and the log says why
    refused = {r["handler"] for r in d.log_records("no user namespaces for this handler") if r.get("why")}
    assert refused == {name for name, ok in advertised.items() if not ok}


@pytest.fixture(scope="module")
def many_layers(env: tuple[CridProcess, str, Path]) -> str:
    """An image of 61 layers, pulled."""
    d, _, base = env
    layers = [ob.busybox_layer("gzip", applets="all", passwd=PASSWD, group=GROUP)]
    layers += [ob.Layer([ob.File(f"layer-{i}", f"{i}\n".encode())]) for i in range(60)]
    with Registry(base / "reg-many") as reg:
        reg.push("e2e/many", "1", ob.Image(layers, ob.ImageConfig(cmd=["sh"], env=["PATH=/bin"])))
        ref = f"{reg.host}/e2e/many:1"
        d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
    return ref


def test_an_image_of_many_layers(env: tuple[CridProcess, str, Path], many_layers: str) -> None:
    """Past about 40 layers the idmapped lowerdirs no longer fit in a page as absolute paths."""
    d, ref = env[0], many_layers
    pod = Pod(d, ref, "userns-many", **userns())
    try:
        cid = pod.run("many", ["sh", "-c", "cat /layer-0 /layer-59; stat -c %u /layer-59"], linux=container_linux())
        assert (pod.wait(cid).exit_code, log_text(pod.logs / "many.log")) == (0, "0\n59\n0\n")
    finally:
        pod.remove()


def test_a_volume_the_kernel_cannot_idmap_fails_the_container(env: tuple[CridProcess, str, Path]) -> None:
    d, image, _ = env
    pod = Pod(d, image, "userns-sysfs", **userns())
    try:
        mounts = [pb.Mount(container_path="/k", host_path="/sys/kernel", readonly=True)]  # sysfs: no idmapped mounts
        with pytest.raises(grpc.RpcError) as err:
            pod.create("sysfs", ["true"], mounts=mounts, linux=container_linux())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "/sys/kernel" in (err.value.details() or "") and "idmapped" in (err.value.details() or "")
        assert not d.client.runtime.ListContainers(pb.ListContainersRequest()).containers  # undone
        assert idmap.mounts_under(os.path.join(d.state, "containers")) == []  # the pod keeps its namespaces
    finally:
        pod.remove()


def test_a_crash_after_the_idmapped_mounts_is_undone_at_restart(
    env: tuple[CridProcess, str, Path], e2e_base: Path
) -> None:
    _, image, _ = env
    base = Path(tempfile.mkdtemp(prefix="usernscrash", dir=e2e_base))
    base.chmod(0o711)
    network = Network(base / "net", 211)
    containers = os.path.join(base, "crid", "state", "containers")
    try:
        # dies once runc created the container: its overlay, bind clones and conmon are there
        d = CridProcess(base, settings=network.settings(), env={faults.ENV: "CreateContainer.runtime_created"}).start()
        d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
        pod = Pod(d, image, "userns-crash", **userns())
        with pytest.raises(grpc.RpcError):
            pod.create("c", ["sleep", "60"], linux=container_linux())
        d.stop()
        assert idmap.mounts_under(containers)
        pod.d = d = CridProcess(base, settings=network.settings()).start()
        assert not d.client.runtime.ListContainers(pb.ListContainersRequest()).containers
        assert idmap.mounts_under(containers) == []
        pod.remove()
        d.stop()
    finally:
        network.cleanup()


def test_root_inside_is_the_mapped_user_outside_also_for_exec(env: tuple[CridProcess, str, Path]) -> None:
    d, image, _ = env
    pod = Pod(d, image, "userns-exec", **userns())
    try:
        cid = pod.run("sleeper", ["sleep", "300"], linux=container_linux())
        resp = pod.exec(cid, ["sh", "-c", "id -u; touch /made-by-exec"])
        assert (resp.exit_code, resp.stdout) == (0, b"0\n")
        status = d.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True))
        pid = json.loads(status.info["info"])["pid"]
        uids = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:"))
        assert uids.split()[1:] == [str(HOST_ID)] * 4
        assert (Path(d.root) / "containers" / cid / "upper" / "made-by-exec").stat().st_uid == HOST_ID
    finally:
        pod.remove()


def test_host_to_container_propagation_of_an_idmapped_volume(env: tuple[CridProcess, str, Path]) -> None:
    d, image, base = env
    src = Path(tempfile.mkdtemp(prefix="prop", dir=base))
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    subprocess.run(["mount", "--make-rshared", str(src)], check=True)
    sub = src / "later"
    sub.mkdir()
    pod = Pod(d, image, "userns-prop", **userns())
    try:
        mounts = [pb.Mount(container_path="/mnt", host_path=str(src), propagation=pb.PROPAGATION_HOST_TO_CONTAINER)]
        cid = pod.run("watch", ["sleep", "600"], mounts=mounts, linux=container_linux())
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)  # after the container started
        (sub / "marker").write_text("x")
        seen = pod.exec(cid, ["ls", "/mnt/later"]).stdout.decode().split()
        assert "marker" in seen
    finally:
        pod.remove()
        subprocess.run(["umount", "-l", str(sub)], check=False)
        subprocess.run(["umount", "-l", str(src)], check=True)


def test_image_volumes_in_a_user_namespace(env: tuple[CridProcess, str, Path], many_layers: str) -> None:
    """A one-layer image volume is a bind mount of the layer, idmapped like any; one of several
    layers is an overlay, which the kernel cannot idmap: the container fails and says so."""
    d, image, _ = env
    pod = Pod(d, image, "userns-imgvol", **userns())
    try:
        vol = pb.Mount(container_path="/img", image=pb.ImageSpec(image=image), readonly=True)
        cid = pod.run("one", ["stat", "-c", "%u", "/img/bin/sh"], mounts=[vol], linux=container_linux())
        assert (pod.wait(cid).exit_code, log_text(pod.logs / "one.log")) == (0, "0\n")
        vol = pb.Mount(container_path="/img", image=pb.ImageSpec(image=many_layers), readonly=True)
        with pytest.raises(grpc.RpcError) as err:
            pod.create("several", ["true"], mounts=[vol], linux=container_linux())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "does not support idmapped mounts" in (err.value.details() or "")
    finally:
        pod.remove()
