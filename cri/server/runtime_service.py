"""runtime.v1.RuntimeService: validate, call the domain, build the reply.

RPCs not defined here fall through to the generated base class, which
raises NotImplementedError; cri.server.rpc answers those UNIMPLEMENTED.
"""

import json
from collections.abc import AsyncIterator
from typing import Any

import cri
from cri import config as configmod
from cri.api.v1 import api_pb2 as pb
from cri.api.v1 import api_pb2_grpc
from cri.conditions import Condition
from cri.config import Config
from cri.errors import InvalidArgument
from cri.runtime import handlers
from cri.runtime.pods import Pods
from cri.runtime.sandbox_store import Sandbox, State

# items per message of the Stream* list calls
STREAM_CHUNK = 200

# The version of the kubelet-runtime API this server speaks (fixed by the CRI).
KUBE_API_VERSION = "0.1.0"
RUNTIME_NAME = "crid"
RUNTIME_API_VERSION = "v1"


def _condition(kind: str, c: Condition) -> pb.RuntimeCondition:
    return pb.RuntimeCondition(type=kind, status=c.ready, reason=c.reason, message=c.message)


def _handler_features(h: handlers.RuntimeHandler) -> pb.RuntimeHandlerFeatures:
    return pb.RuntimeHandlerFeatures(
        recursive_read_only_mounts=h.features.recursive_read_only_mounts,
        user_namespaces=h.features.user_namespaces,
    )


def sandbox_message(sb: Sandbox) -> pb.PodSandbox:
    return pb.PodSandbox(
        id=sb.id,
        metadata=sb.config.metadata,
        state=pb.SANDBOX_READY if sb.state == State.READY else pb.SANDBOX_NOTREADY,
        created_at=sb.created_at,
        labels=sb.config.labels,
        annotations=sb.config.annotations,
        runtime_handler=sb.handler,
    )


def sandbox_status(sb: Sandbox) -> pb.PodSandboxStatus:
    network = pb.PodSandboxNetworkStatus()
    if sb.ips:
        network.ip = sb.ips[0]
        network.additional_ips.extend(pb.PodIP(ip=ip) for ip in sb.ips[1:])
    opts = sb.config.linux.security_context.namespace_options
    return pb.PodSandboxStatus(
        id=sb.id,
        metadata=sb.config.metadata,
        state=pb.SANDBOX_READY if sb.state == State.READY else pb.SANDBOX_NOTREADY,
        created_at=sb.created_at,
        network=network,
        linux=pb.LinuxPodSandboxStatus(
            namespaces=pb.Namespace(options=pb.NamespaceOption(network=opts.network, pid=opts.pid, ipc=opts.ipc))
        ),
        labels=sb.config.labels,
        annotations=sb.config.annotations,
        runtime_handler=sb.handler,
    )


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, config: Config, pods: Pods) -> None:
        self.config = config
        self.pods = pods

    async def Version(self, request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(
            version=KUBE_API_VERSION,
            runtime_name=RUNTIME_NAME,
            runtime_version=cri.__version__,
            runtime_api_version=RUNTIME_API_VERSION,
        )

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse:
        status = pb.RuntimeStatus(
            conditions=[
                _condition("RuntimeReady", handlers.runtime_condition(self.config)),
                _condition("NetworkReady", self.pods.cni.status()),
            ]
        )
        runtime_handlers = []
        for h in handlers.handlers(self.config):
            features = _handler_features(h)
            runtime_handlers.append(pb.RuntimeHandler(name=h.name, features=features))
            if h.name == self.config.runtime.default_handler:
                # kubelet looks up pods without a RuntimeClass under the empty name
                runtime_handlers.append(pb.RuntimeHandler(name="", features=features))
        info = {"config": configmod.as_json(self.config)} if request.verbose else {}
        return pb.StatusResponse(
            status=status,
            info=info,
            runtime_handlers=runtime_handlers,
            features=pb.RuntimeFeatures(supplemental_groups_policy=False),
        )

    async def RuntimeConfig(self, request: pb.RuntimeConfigRequest, context: Any) -> pb.RuntimeConfigResponse:
        # the config schema admits only cgroupfs until a systemd driver exists
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=pb.CGROUPFS))

    # --- pod sandboxes -------------------------------------------------------------

    async def RunPodSandbox(self, request: pb.RunPodSandboxRequest, context: Any) -> pb.RunPodSandboxResponse:
        if not request.HasField("config"):
            raise InvalidArgument("RunPodSandbox: config is missing")
        sandbox_id = await self.pods.run(request.config, request.runtime_handler)
        return pb.RunPodSandboxResponse(pod_sandbox_id=sandbox_id)

    async def StopPodSandbox(self, request: pb.StopPodSandboxRequest, context: Any) -> pb.StopPodSandboxResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("StopPodSandbox: pod_sandbox_id is empty")
        await self.pods.stop(request.pod_sandbox_id)
        return pb.StopPodSandboxResponse()

    async def RemovePodSandbox(self, request: pb.RemovePodSandboxRequest, context: Any) -> pb.RemovePodSandboxResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("RemovePodSandbox: pod_sandbox_id is empty")
        await self.pods.remove(request.pod_sandbox_id)
        return pb.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: pb.PodSandboxStatusRequest, context: Any) -> pb.PodSandboxStatusResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("PodSandboxStatus: pod_sandbox_id is empty")
        sb = self.pods.get(request.pod_sandbox_id)
        info = {}
        if request.verbose:
            info["info"] = json.dumps(
                {
                    "id": sb.id,
                    "name": sb.name,
                    "namespaces": sb.namespaces,
                    "netnsPath": sb.namespaces.get("net", ""),
                    "infraPid": sb.infra_pid,
                    "cgroupsCreated": sb.cgroups,
                    "cniResult": (r.raw if (r := self.pods.cni.cached(sb.id)) is not None else None),
                    "runtimeHandler": sb.handler,
                }
            )
        return pb.PodSandboxStatusResponse(status=sandbox_status(sb), info=info)

    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: Any) -> pb.ListPodSandboxResponse:
        found = self.pods.list(request.filter if request.HasField("filter") else None)
        return pb.ListPodSandboxResponse(items=[sandbox_message(sb) for sb in found])

    async def StreamPodSandboxes(
        self, request: pb.StreamPodSandboxesRequest, context: Any
    ) -> AsyncIterator[pb.StreamPodSandboxesResponse]:
        found = self.pods.list(request.filter if request.HasField("filter") else None)
        for i in range(0, len(found), STREAM_CHUNK):
            yield pb.StreamPodSandboxesResponse(
                pod_sandboxes=[sandbox_message(sb) for sb in found[i : i + STREAM_CHUNK]]
            )
