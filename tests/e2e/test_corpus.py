"""The image corpus end to end: images made by real tools (umoci, buildah, skopeo, GNU tar, mmdebstrap;
tests/support/corpus) pushed to a real registry, pulled cold three times by crid and run, and their
root filesystem as a running container sees it compared with containerd's view of the same image.

The corpus is built by the module fixture, or reused from ``.cache/corpus/`` when its sources have not
changed. The module skips only when one of the tools is not installed (``hack/install-deps``).
"""

import contextlib
import re
import secrets
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from benchmarks.containerd import ContainerdProcess
from benchmarks.harness import remove_all_pods
from benchmarks.host_setup import free_subnets, make_cgroup, remove_cgroups
from benchmarks.images import pause_image, write_hosts_toml
from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess
from tests.support.cni_net import Network
from tests.support.corpus import Corpus, CorpusImage, Tools, build, debian, fsview, push
from tests.support.corpus.model import TAG
from tests.support.corpus.pods import Pod, image_id, pull, remove_image
from tests.support.corpus.tools import missing_tools
from tests.support.daemon import free_port
from tests.support.registry import Registry

pytestmark = pytest.mark.timeout(900)

PAUSE = "corpus/pause:3.9"
NETWORK_INDEX = 222  # 10.123.222.0/24
PULLS = 3


@dataclass
class Env:
    corpus: Corpus
    registry: Registry
    crid: CridProcess
    containerd: ContainerdProcess
    cgroup: str  # containerd's pods' cgroup parent

    def ref(self, image: CorpusImage) -> str:
        return image.ref(self.registry.host)


def _stop(daemon: CridProcess | ContainerdProcess) -> None:
    remove_all_pods(daemon.client)
    daemon.stop()


@pytest.fixture(scope="module")
def env(e2e_base: Path) -> Iterator[Env]:
    missing = missing_tools()
    if missing:
        pytest.skip(f"the image corpus needs {', '.join(missing)}: run hack/install-deps")
    lines: list[str] = []
    corpus, seconds = build.ensure(lines.append)
    print(f"corpus: {len(corpus.images)} images in {corpus.dir}, ready in {seconds:.1f}s")
    steps = sorted((line for line in lines if re.match(r"\s*\d+\.\d+s ", line)), reverse=True)
    for line in steps[:5]:  # built now: the slowest steps
        print(f"corpus:   {line[:150]}")
    base = Path(tempfile.mkdtemp(prefix="corpus", dir=e2e_base))
    cgroup = base.name
    with contextlib.ExitStack() as stack:
        registry = Registry(base / "reg")
        stack.callback(registry.stop)
        registry.start()
        t0 = time.monotonic()
        push(corpus, registry.host, Tools(base / "tools"))
        registry.push(PAUSE.split(":")[0], PAUSE.split(":")[1], pause_image())
        print(f"corpus: pushed to {registry.url} in {time.monotonic() - t0:.1f}s")
        for image in corpus.images:  # skopeo pushed each as it was cached, not converted
            served = registry.client().get_manifest(image.repo, TAG, accept=image.media_type)
            assert served.headers["content-type"] == image.media_type, image.name
            assert len(served.body) == image.manifest_bytes, image.name

        network = Network(base / "net", NETWORK_INDEX)
        stack.callback(network.cleanup)
        crid = CridProcess(base, settings=network.settings())
        write_hosts_toml(Path(crid.config.images.registry_config_dir), registry)
        stack.callback(_stop, crid)
        crid.start()

        stack.callback(remove_cgroups, cgroup)  # after containerd has gone
        make_cgroup(f"{cgroup}/containerd")
        containerd = ContainerdProcess(base, sandbox_image=f"{registry.host}/{PAUSE}", subnet=free_subnets(1)[0])
        write_hosts_toml(containerd.registry_config_dir, registry)
        stack.callback(_stop, containerd)
        containerd.start()
        yield Env(corpus, registry, crid, containerd, f"/{cgroup}/containerd")


def _pod_name(kind: str, name: str) -> str:
    return f"{kind}-{name}-{secrets.token_hex(2)}"


# --- crid: three cold pulls, then the image's own check -------------------------------------


@pytest.mark.parametrize("name", build.NAMES)
def test_pulls_cold_three_times_and_runs_its_check(env: Env, name: str) -> None:
    image = env.corpus[name]
    ref, client = env.ref(image), env.crid.client
    config_gets = env.registry.blob_downloads(image.image_id, image.repo)
    for attempt in range(1, PULLS + 1):
        assert pull(client, ref) == image.image_id, f"pull {attempt} of {ref}"
        # cold: the registry served the config again (the image was removed, its blobs with it)
        assert env.registry.blob_downloads(image.image_id, image.repo) == config_gets + attempt
        if attempt < PULLS:
            remove_image(client, ref)
            assert image_id(client, ref) == ""
    pod = Pod(client, _pod_name("check", name), env.crid.dir)
    try:
        _run_check(pod, image, ref)
    finally:
        pod.remove()
        remove_image(client, ref)


def _run_check(pod: Pod, image: CorpusImage, ref: str) -> None:
    cid = pod.run("check", ref, image.check)
    status = pod.wait(cid)
    out = pod.log("check")
    code, last = status.exit_code, out.splitlines()[-1:]
    assert (code, last) == (0, [image.ok_line]), f"{image.about}:\n{out}"


# --- crid and containerd: the same filesystem view ---------------------------------------------
# containerd runs the image's check too (so the checks are what the reference runtime does), then
# both run it sleeping and their views through /proc/PID/root are compared.


def _sleeping_view(client_pod: Pod, ref: str) -> dict[str, fsview.Entry]:
    cid = client_pod.run("sleep", ref, ["/bin/sleep", "3600"])
    return fsview.view(client_pod.pid(cid))


@pytest.mark.parametrize("name", build.NAMES)
def test_same_filesystem_view_as_containerd(env: Env, name: str) -> None:
    image = env.corpus[name]
    ref = env.ref(image)
    assert pull(env.containerd.client, ref) == image.image_id, "containerd's pull"
    theirs = Pod(env.containerd.client, _pod_name("view", name), env.containerd.dir, cgroup_parent=env.cgroup)
    try:
        _run_check(theirs, image, ref)  # the checks say what containerd makes of the image
        containerd_view = _sleeping_view(theirs, ref)
        assert pull(env.crid.client, ref) == image.image_id, "crid's pull"
        # kubelet's image GC counts Image.size: the same number as containerd's for the same image
        assert _size(env.crid.client, ref) == _size(env.containerd.client, ref), f"Image.size of {name}"
        ours = Pod(env.crid.client, _pod_name("view", name), env.crid.dir)
        try:
            crid_view = _sleeping_view(ours, ref)
        finally:
            ours.remove()
    finally:
        theirs.remove()
        with contextlib.suppress(grpc.RpcError):
            remove_image(env.crid.client, ref)
        remove_image(env.containerd.client, ref)
    diffs = fsview.differences(crid_view, containerd_view)
    print(f"{name}: {fsview.summary(containerd_view)}; {len(diffs)} differences")
    assert not diffs, f"{len(diffs)} differences between crid's and containerd's view of {name}:\n" + "\n".join(
        diffs[:60]
    )


def _size(client: CriClient, ref: str) -> int:
    return int(client.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))).image.size)


# --- the Debian image as a workload -----------------------------------------------------------


def _http_get(url: str, timeout: float = 5) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    with opener.open(url, timeout=timeout) as resp:
        body: bytes = resp.read()
        return body.decode()


def _wait_http(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _http_get(url)
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_debian_runs_python_and_serves_nginx_through_pod_ip_and_host_port(env: Env) -> None:
    image = env.corpus["debian"]
    ref, client = env.ref(image), env.crid.client
    assert pull(client, ref) == image.image_id
    host_port = free_port()
    mapping = pb.PortMapping(protocol=pb.TCP, container_port=80, host_port=host_port)
    pod = Pod(client, _pod_name("nginx", "debian"), env.crid.dir, port_mappings=[mapping])
    try:
        cid = pod.run("nginx", ref)  # the image's command: nginx -g 'daemon off;'
        page = f"/{debian.PAGE.removeprefix('var/www/html/')}"
        assert _wait_http(f"http://{pod.ip}{page}") == debian.PAGE_TEXT
        gateway = pod.ip.rsplit(".", 1)[0] + ".1"  # the bridge: the host's address on the pod network
        assert _http_get(f"http://{gateway}:{host_port}{page}") == debian.PAGE_TEXT
        assert _http_get(f"http://127.0.0.1:{host_port}{page}") == debian.PAGE_TEXT
        assert "Welcome to nginx" in _http_get(f"http://{pod.ip}/")

        py = pod.exec(cid, ["python3", "-c", "import sys; print('python', sys.version_info[:2])"])
        assert (py.exit_code, py.stdout.decode()) == (0, "python (3, 11)\n"), py.stderr
        link = pod.exec(cid, ["readlink", "/lib"])
        assert link.stdout.decode() == "usr/lib\n"
        ls = pod.exec(cid, ["ls", "/lib/"])
        assert ls.exit_code == 0 and "x86_64-linux-gnu" in ls.stdout.decode().split(), ls.stderr
        root = Path(f"/proc/{pod.pid(cid)}/root")
        assert (root / "lib").is_symlink() and (root / "lib" / "x86_64-linux-gnu" / "libc.so.6").is_file()
    finally:
        pod.remove()
        remove_image(client, ref)
