"""The streaming server's calls into the domain: containers and pods."""

from cri.api.v1 import api_pb2 as pb
from cri.runtime.containers import Containers
from cri.runtime.pods import Pods
from cri.runtime.stdio import Duplex, Stdio


class DomainBackend:
    def __init__(self, containers: Containers, pods: Pods) -> None:
        self.containers = containers
        self.pods = pods

    async def exec(self, request: pb.ExecRequest, stdio: Stdio) -> int:
        return await self.containers.exec_stream(request.container_id, list(request.cmd), stdio)

    async def attach(self, request: pb.AttachRequest, stdio: Stdio) -> None:
        await self.containers.attach(request.container_id, stdio)

    async def port_forward(self, request: pb.PortForwardRequest, port: int, stream: Duplex) -> None:
        await self.pods.port_forward(request.pod_sandbox_id, port, stream)
