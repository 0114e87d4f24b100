"""Pods and containers over any CRI runtime (crid or containerd), for running the corpus images."""

import json
import re
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb

CRI_LINE = re.compile(r"^\S+ (stdout|stderr) (P|F) (.*)$")


def pull(client: CriClient, ref: str, timeout: float = 600) -> str:
    req = pb.PullImageRequest(image=pb.ImageSpec(image=ref))
    return str(client.image.PullImage(req, timeout=timeout).image_ref)


def image_id(client: CriClient, ref: str) -> str:
    """The image's id, "" when the runtime does not have it."""
    resp = client.image.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref)))
    return str(resp.image.id) if resp.HasField("image") else ""


def remove_image(client: CriClient, ref: str) -> None:
    client.image.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)), timeout=120)


def log_text(path: Path) -> str:
    """The text of a CRI-format container log."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        m = CRI_LINE.match(line)
        if m is None:
            raise AssertionError(f"not a CRI log line in {path}: {line!r}")
        out.append(m.group(3) + ("\n" if m.group(2) == "F" else ""))
    return "".join(out)


class Pod:
    """One pod sandbox; its containers log to a temp dir under ``log_base``."""

    def __init__(
        self,
        client: CriClient,
        name: str,
        log_base: Path,
        *,
        cgroup_parent: str = "",
        port_mappings: Sequence[pb.PortMapping] = (),
    ) -> None:
        self.client = client
        self.logs = Path(tempfile.mkdtemp(prefix="logs", dir=log_base))
        self.config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace="corpus", uid=f"uid-{name}"),
            hostname=name[:63],
            log_directory=str(self.logs),
            port_mappings=list(port_mappings),
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=cgroup_parent),
        )
        self.id = str(
            client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=self.config), timeout=120).pod_sandbox_id
        )

    @property
    def ip(self) -> str:
        status = self.client.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=self.id)).status
        return str(status.network.ip)

    def run(self, name: str, image: str, command: Sequence[str] = ()) -> str:
        """Create and start a container; its id. No ``command``: the image's entrypoint and cmd."""
        cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name),
            image=pb.ImageSpec(image=image),
            command=list(command),
            log_path=f"{name}.log",
        )
        req = pb.CreateContainerRequest(pod_sandbox_id=self.id, config=cfg, sandbox_config=self.config)
        cid = str(self.client.runtime.CreateContainer(req, timeout=120).container_id)
        self.client.runtime.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
        return cid

    def status(self, cid: str) -> tuple[pb.ContainerStatus, dict[str, Any]]:
        resp = self.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True))
        info = json.loads(resp.info["info"]) if "info" in resp.info else {}
        return resp.status, info

    def pid(self, cid: str) -> int:
        """The container's init process on the host (both crid's and containerd's verbose info have it)."""
        _, info = self.status(cid)
        return int(info["pid"])

    def wait(self, cid: str, timeout: float = 60) -> pb.ContainerStatus:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = self.status(cid)
            if status.state == pb.CONTAINER_EXITED:
                return status
            time.sleep(0.05)
        raise AssertionError(f"container {cid} did not exit within {timeout}s")

    def log(self, name: str) -> str:
        return log_text(self.logs / f"{name}.log")

    def exec(self, cid: str, argv: Sequence[str], timeout: int = 30) -> pb.ExecSyncResponse:
        resp: pb.ExecSyncResponse = self.client.runtime.ExecSync(
            pb.ExecSyncRequest(container_id=cid, cmd=list(argv), timeout=timeout), timeout=timeout + 10
        )
        return resp

    def remove(self) -> None:
        try:
            self.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=self.id), timeout=120)
        finally:
            self.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=self.id), timeout=120)


def rpc_message(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code}: {details}"
