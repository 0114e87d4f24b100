"""runtime.v1.RuntimeService: validate, call the domain, build the reply.

RPCs not defined here fall through to the generated base class, which
raises NotImplementedError; cri.server.rpc answers those UNIMPLEMENTED.
"""

from typing import Any

import cri
from cri import config as configmod
from cri.api.v1 import api_pb2 as pb
from cri.api.v1 import api_pb2_grpc
from cri.cni.readiness import network_condition
from cri.conditions import Condition
from cri.config import Config
from cri.runtime import handlers

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


class RuntimeServicer(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, config: Config) -> None:
        self.config = config

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
                _condition("NetworkReady", network_condition()),
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
