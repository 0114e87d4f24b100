"""The containers' e2e fixture and helpers: one registry, one daemon with a private network and the
test image pulled (``env``, module-scoped), and a pod per test (``Pod``, ``pod``) with helpers to run
containers in it and read their CRI logs."""

import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support.cni_net import Network
from tests.support.registry import Registry

PASSWD = (*ob.DEFAULT_PASSWD, "alice:x:1000:1000:alice:/home/alice:/bin/sh")


GROUP = (*ob.DEFAULT_GROUP, "alice:x:1000:", "staff:x:50:alice", "extra:x:60:alice")


CAP_NET_ADMIN = 12


@pytest.fixture(scope="module")
def env(e2e_base: Path) -> Iterator[tuple[CridProcess, str, Network]]:
    """One registry, one daemon with a private network, and the test image pulled."""
    base = Path(tempfile.mkdtemp(prefix="ctr", dir=e2e_base))
    network = Network(base / "net", 200)
    layer = ob.busybox_layer("gzip", applets="all", passwd=PASSWD, group=GROUP)
    image = ob.Image([layer], ob.ImageConfig(cmd=["sh"], env=["PATH=/bin", "FROM_IMAGE=1", "OVERRIDE=image"]))
    with Registry(base / "reg") as reg:
        reg.push("e2e/busybox", "1", image)
        d = CridProcess(base, settings=network.settings()).start()
        ref = f"{reg.host}/e2e/busybox:1"
        d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
        try:
            yield d, ref, network
        finally:
            d.remove_all_pods()
            d.stop()
            network.cleanup()


class Pod:
    """A pod for one test, with helpers to run containers in it."""

    def __init__(self, d: CridProcess, image: str, name: str, **linux: Any) -> None:
        self.d, self.image = d, image
        self.logs = Path(tempfile.mkdtemp(prefix="logs", dir=d.dir))
        self.config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="e2e", uid=f"uid-{name}"),
            hostname=name,
            log_directory=str(self.logs),
            linux=pb.LinuxPodSandboxConfig(**linux),
        )
        self.id = d.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=self.config)).pod_sandbox_id

    def create(self, name: str, command: list[str], **kw: Any) -> str:
        linux = kw.pop("linux", None)
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=self.image),
            command=command,
            log_path=f"{name}.log",
            linux=linux,
            **kw,
        )
        req = pb.CreateContainerRequest(pod_sandbox_id=self.id, config=cfg, sandbox_config=self.config)
        return str(self.d.client.runtime.CreateContainer(req).container_id)

    def run(self, name: str, command: list[str], **kw: Any) -> str:
        cid = self.create(name, command, **kw)
        self.d.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid))
        return cid

    def status(self, cid: str) -> pb.ContainerStatus:
        st: pb.ContainerStatus = self.d.client.runtime.ContainerStatus(
            pb.ContainerStatusRequest(container_id=cid)
        ).status
        return st

    def wait(self, cid: str, timeout: float = 20) -> pb.ContainerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.status(cid)
            if st.state == pb.CONTAINER_EXITED:
                return st
            time.sleep(0.05)
        raise AssertionError(f"container {cid} did not exit: {self.status(cid)}")

    def output(self, name: str, command: list[str], **kw: Any) -> tuple[int, str]:
        """Run to completion; (exit code, stdout+stderr text from the CRI log)."""
        cid = self.run(name, command, **kw)
        st = self.wait(cid)
        return st.exit_code, log_text(self.logs / f"{name}.log")

    def exec(self, cid: str, cmd: list[str], timeout: int = 0) -> pb.ExecSyncResponse:
        resp: pb.ExecSyncResponse = self.d.client.runtime.ExecSync(
            pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout)
        )
        return resp

    def remove(self) -> None:
        self.d.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=self.id))
        self.d.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=self.id))


CRI_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+(Z|[+-]\d\d:\d\d) (stdout|stderr) (P|F) (.*)$")


def log_text(path: Path) -> str:
    out = []
    for line in path.read_text().splitlines():
        m = CRI_LINE.match(line)
        assert m, f"not a CRI log line: {line!r}"
        out.append(m.group(4) + ("\n" if m.group(3) == "F" else ""))
    return "".join(out)


def pod_name(request: pytest.FixtureRequest) -> str:
    """A pod name (and hostname: RFC 1123) from the test's name, parameters included."""
    return re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")


@pytest.fixture
def pod(env: tuple[CridProcess, str, Network], request: pytest.FixtureRequest) -> Iterator[Pod]:
    d, image, _ = env
    p = Pod(d, image, pod_name(request))
    yield p
    p.remove()


def sc(**kw: Any) -> pb.LinuxContainerConfig:
    return pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(**kw))


def cap_eff(text: str) -> int:
    return int(re.search(r"CapEff:\s+([0-9a-f]+)", text).group(1), 16)  # type: ignore[union-attr]
