"""runtime.v1.RuntimeService: validate, call the domain, build the reply.

RPCs not defined here fall through to the generated base class, which
raises NotImplementedError; cri.server.rpc answers those UNIMPLEMENTED.
"""

import asyncio
import json
import os
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

from google.protobuf.message import Message

import cri
from cri import config as configmod
from cri.api.v1 import api_pb2 as pb
from cri.conditions import Condition
from cri.config import Config
from cri.errors import FailedPrecondition, InvalidArgument, Unimplemented
from cri.runtime import handlers, pod_resources
from cri.runtime.container_store import Container
from cri.runtime.container_store import State as CState
from cri.runtime.containers import Containers
from cri.runtime.pods import Pods
from cri.runtime.sandbox_store import Sandbox, State
from cri.runtime.stats import Usage
from cri.server.events_service import EventsServicer
from cri.server.messages import container_message, container_status, list_item, sandbox_message, sandbox_status
from cri.server.stats_service import StatsServicer
from cri.server.streaming import StreamingServer
from cri.server.usage_messages import memory_usage, u64

# items per message of the Stream* list calls
STREAM_CHUNK = 200
MAX_KEPT_REPLIES = 8  # list replies kept, one per filter (kubelet uses two or three)

# The version of the kubelet-runtime API this server speaks (fixed by the CRI).
KUBE_API_VERSION = "0.1.0"
RUNTIME_NAME = "crid"
RUNTIME_API_VERSION = "v1"
_VERSION = pb.VersionResponse(
    version=KUBE_API_VERSION,
    runtime_name=RUNTIME_NAME,
    runtime_version=cri.__version__,
    runtime_api_version=RUNTIME_API_VERSION,
).SerializeToString()  # the same on every call: serialized once


_NO_POD_CHECKPOINTS = (
    "crid has no pod checkpointing; CheckpointContainer checkpoints one container "
    "(and crid restores none: a checkpoint archive is for inspection, e.g. with checkpointctl)"
)


def _condition(kind: str, c: Condition) -> pb.RuntimeCondition:
    return pb.RuntimeCondition(type=kind, status=c.ready, reason=c.reason, message=c.message)


def _handler_features(h: handlers.RuntimeHandler) -> pb.RuntimeHandlerFeatures:
    return pb.RuntimeHandlerFeatures(
        recursive_read_only_mounts=h.features.recursive_read_only_mounts,
        user_namespaces=h.features.user_namespaces,
    )


class _Listing:
    """Each object's list entry, serialized and framed (messages.list_item), kept until its
    state changes: List calls are kubelet's most frequent, and building and serializing
    protobuf messages in Python is most of their cost. A reply is the entries joined."""

    def __init__(self, build: Callable[[Any], Message]) -> None:
        self.build = build
        self._cache: dict[str, tuple[str, bytes]] = {}
        self._replies: dict[bytes, tuple[int, bytes]] = {}  # filter -> (generation, reply)

    def get(self, obj: Any, version: str) -> bytes:
        hit = self._cache.get(obj.id)
        if hit is not None and hit[0] == version:
            return hit[1]
        entry = list_item(self.build(obj).SerializeToString())
        self._cache[obj.id] = (version, entry)
        return entry

    def reply(self, found: Sequence[Any], live: Collection[str]) -> bytes:
        """The serialized reply listing ``found`` (objects with an ``id`` and a ``state``)."""
        if len(self._cache) > 2 * len(live) + 16:
            self._cache = {k: v for k, v in self._cache.items() if k in live}
        return b"".join([self.get(obj, obj.state.value) for obj in found])

    def kept(self, filt: Message | None, generation: int, make: Callable[[], bytes]) -> bytes:
        """The reply to a list call with ``filt``, made again only when the records' ``generation``
        has moved since: kubelet lists every second with the same few filters."""
        key = filt.SerializeToString() if filt is not None else b""
        hit = self._replies.get(key)
        if hit is not None and hit[0] == generation:
            return hit[1]
        if len(self._replies) >= MAX_KEPT_REPLIES:
            self._replies.clear()
        reply = make()
        self._replies[key] = (generation, reply)
        return reply


class RuntimeServicer(EventsServicer, StatsServicer):
    def __init__(self, config: Config, pods: Pods, containers: Containers, streaming: StreamingServer) -> None:
        self.config = config
        self.pods = pods
        self.containers = containers
        self.streaming = streaming
        self._pod_listing = _Listing(sandbox_message)
        self._container_listing = _Listing(container_message)
        self._status: tuple[object, bytes] | None = None  # the last non-verbose Status reply and what it shows

    def _pods_listed(self, found: Sequence[Sandbox]) -> bytes:
        return self._pod_listing.reply(found, self.pods.ids())

    def _containers_listed(self, found: Sequence[Container]) -> bytes:
        return self._container_listing.reply(found, self.containers.ids())

    async def Version(self, request: pb.VersionRequest, context: Any) -> bytes:
        return _VERSION

    async def Status(self, request: pb.StatusRequest, context: Any) -> pb.StatusResponse | bytes:
        # the checks run on every call (a binary or a CNI config may come or go at any time);
        # the reply is built again only when their outcome changed
        runtime, network = handlers.runtime_condition(self.config), self.pods.network_status()
        key = (runtime, network, tuple(self.containers.handlers.features.items()))
        if not request.verbose and self._status is not None and self._status[0] == key:
            return self._status[1]
        runtime_handlers = []
        for h in self.containers.handlers.all():
            features = _handler_features(h)
            runtime_handlers.append(pb.RuntimeHandler(name=h.name, features=features))
            if h.name == self.config.runtime.default_handler:
                # kubelet looks up pods without a RuntimeClass under the empty name
                runtime_handlers.append(pb.RuntimeHandler(name="", features=features))
        conditions = [_condition("RuntimeReady", runtime), _condition("NetworkReady", network)]
        reply = pb.StatusResponse(
            status=pb.RuntimeStatus(conditions=conditions),
            runtime_handlers=runtime_handlers,
            # Merge and Strict are applied by the spec builder (cri/runtime/users.py)
            features=pb.RuntimeFeatures(supplemental_groups_policy=True),
        )
        if not request.verbose:
            self._status = (key, reply.SerializeToString())
            return self._status[1]
        reply.info["config"] = configmod.as_json(self.config)
        # AppArmor: requests for a profile are refused (InvalidArgument); unconfined works
        reply.info["apparmor"] = json.dumps(
            {"supported": False, "kernelEnabled": handlers.apparmor_enabled(), "profiles": "unconfined only"}
        )
        # CDI: the spec dirs, the devices found and the errors of the spec files skipped (read again if changed)
        reply.info["cdi"] = json.dumps(await asyncio.to_thread(self.containers.system.cdi_status))
        reply.info["checkpoint"] = json.dumps(self.containers.handlers.criu.describe())
        return reply

    async def RuntimeConfig(self, request: pb.RuntimeConfigRequest, context: Any) -> pb.RuntimeConfigResponse:
        # what [runtime] cgroup_driver says (the schema refuses "systemd": crid has no systemd driver)
        driver = self.config.runtime.cgroup_driver.upper()  # the enum's name: CGROUPFS
        return pb.RuntimeConfigResponse(linux=pb.LinuxRuntimeConfiguration(cgroup_driver=driver))

    async def UpdateRuntimeConfig(
        self, request: pb.UpdateRuntimeConfigRequest, context: Any
    ) -> pb.UpdateRuntimeConfigResponse:
        # kubelet sends the node's pod CIDR(s), comma separated for dual stack
        cidr = request.runtime_config.network_config.pod_cidr
        if cidr:
            self.pods.update_pod_cidrs([c.strip() for c in cidr.split(",") if c.strip()])
        return pb.UpdateRuntimeConfigResponse()

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
                    "cniResult": self.pods.network_result(sb.id),
                    "runtimeHandler": sb.handler,
                    "podResources": pod_resources.describe(sb),
                }
            )
        return pb.PodSandboxStatusResponse(status=sandbox_status(sb), info=info)

    async def ListPodSandbox(self, request: pb.ListPodSandboxRequest, context: Any) -> bytes:
        # a ListPodSandboxResponse on the wire (as the Stream* replies below): see _Listing
        filt = request.filter if request.HasField("filter") else None
        return self._pod_listing.kept(filt, self.pods.generation(), lambda: self._pods_listed(self.pods.list(filt)))

    async def StreamPodSandboxes(self, request: pb.StreamPodSandboxesRequest, context: Any) -> AsyncIterator[bytes]:
        found = self.pods.list(request.filter if request.HasField("filter") else None)
        for i in range(0, len(found), STREAM_CHUNK):
            yield self._pods_listed(found[i : i + STREAM_CHUNK])

    # --- containers ------------------------------------------------------------------

    async def CreateContainer(self, request: pb.CreateContainerRequest, context: Any) -> pb.CreateContainerResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("CreateContainer: pod_sandbox_id is empty")
        if not request.HasField("config"):
            raise InvalidArgument("CreateContainer: config is missing")
        cid = await self.containers.create(request.pod_sandbox_id, request.config)
        return pb.CreateContainerResponse(container_id=cid)

    async def StartContainer(self, request: pb.StartContainerRequest, context: Any) -> pb.StartContainerResponse:
        await self.containers.start(_need(request.container_id, "StartContainer"))
        return pb.StartContainerResponse()

    async def StopContainer(self, request: pb.StopContainerRequest, context: Any) -> pb.StopContainerResponse:
        await self.containers.stop(_need(request.container_id, "StopContainer"), int(request.timeout))
        return pb.StopContainerResponse()

    async def RemoveContainer(self, request: pb.RemoveContainerRequest, context: Any) -> pb.RemoveContainerResponse:
        await self.containers.remove(_need(request.container_id, "RemoveContainer"))
        return pb.RemoveContainerResponse()

    async def ListContainers(self, request: pb.ListContainersRequest, context: Any) -> bytes:
        filt = request.filter if request.HasField("filter") else None
        generation = self.containers.generation()
        return self._container_listing.kept(
            filt, generation, lambda: self._containers_listed(self.containers.list(filt))
        )

    async def StreamContainers(self, request: pb.StreamContainersRequest, context: Any) -> AsyncIterator[bytes]:
        found = self.containers.list(request.filter if request.HasField("filter") else None)
        for i in range(0, len(found), STREAM_CHUNK):
            yield self._containers_listed(found[i : i + STREAM_CHUNK])

    async def ContainerStatus(self, request: pb.ContainerStatusRequest, context: Any) -> pb.ContainerStatusResponse:
        c = self.containers.get(_need(request.container_id, "ContainerStatus"))
        info = {}
        if request.verbose:
            bundle = self.containers.bundle(c.id)
            runtime_spec = await asyncio.to_thread(_load_json, os.path.join(bundle, "config.json"))
            info["info"] = json.dumps(
                {"id": c.id, "pid": c.pid, "bundle": bundle, "runtimeHandler": c.handler, "runtimeSpec": runtime_spec,
                 "sandboxID": c.sandbox_id, "name": c.name}
            )  # fmt: skip
        return pb.ContainerStatusResponse(status=container_status(c), info=info)

    async def UpdateContainerResources(
        self, request: pb.UpdateContainerResourcesRequest, context: Any
    ) -> pb.UpdateContainerResourcesResponse:
        cid = _need(request.container_id, "UpdateContainerResources")
        await self.containers.update_resources(cid, request.linux)
        return pb.UpdateContainerResourcesResponse()

    async def ReopenContainerLog(
        self, request: pb.ReopenContainerLogRequest, context: Any
    ) -> pb.ReopenContainerLogResponse:
        await self.containers.reopen_log(_need(request.container_id, "ReopenContainerLog"))
        return pb.ReopenContainerLogResponse()

    async def ContainerStats(self, request: pb.ContainerStatsRequest, context: Any) -> pb.ContainerStatsResponse:
        c = self.containers.get(_need(request.container_id, "ContainerStats"))
        ((_, usage, cores),) = await self.containers.stats([c])
        return pb.ContainerStatsResponse(stats=container_stats(c, usage, cores, self._layers_dir()))

    async def ListContainerStats(
        self, request: pb.ListContainerStatsRequest, context: Any
    ) -> pb.ListContainerStatsResponse:
        found = self.containers.list(request.filter if request.HasField("filter") else None)
        samples = await self.containers.stats(found)
        mountpoint = self._layers_dir()
        return pb.ListContainerStatsResponse(stats=[container_stats(c, u, n, mountpoint) for c, u, n in samples])

    def _layers_dir(self) -> str:
        return os.path.join(self.config.root_dir, "containers")

    async def ExecSync(self, request: pb.ExecSyncRequest, context: Any) -> pb.ExecSyncResponse:
        result = await self.containers.exec_sync(
            _need(request.container_id, "ExecSync"), list(request.cmd), int(request.timeout)
        )
        return pb.ExecSyncResponse(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code)

    async def CheckpointContainer(
        self, request: pb.CheckpointContainerRequest, context: Any
    ) -> pb.CheckpointContainerResponse:
        cid = _need(request.container_id, "CheckpointContainer")
        await self.containers.checkpoint(cid, request.location, int(request.timeout))
        return pb.CheckpointContainerResponse()

    async def CheckpointPod(self, request: pb.CheckpointPodRequest, context: Any) -> pb.CheckpointPodResponse:
        raise Unimplemented(f"CheckpointPod is not implemented: {_NO_POD_CHECKPOINTS}")

    async def RestorePod(self, request: pb.RestorePodRequest, context: Any) -> pb.RestorePodResponse:
        raise Unimplemented(f"RestorePod is not implemented: {_NO_POD_CHECKPOINTS}")

    # --- streaming: the calls hand out a URL of the streaming server -------------------------

    def _running(self, request: pb.ExecRequest | pb.AttachRequest, rpc: str) -> None:
        """Checks, and gives the request the container's full id (a prefix might
        name another container by the time the client connects)."""
        c = self.containers.get(_need(request.container_id, rpc))
        request.container_id = c.id
        if c.state != CState.RUNNING:
            raise FailedPrecondition(f"container {c.id} is {c.state.value}, not running")
        if request.tty and request.stderr:
            raise InvalidArgument(f"{rpc}: tty and stderr cannot both be set (a terminal has one output stream)")
        if not (request.stdin or request.stdout or request.stderr):
            raise InvalidArgument(f"{rpc}: one of stdin, stdout and stderr must be set")

    async def Exec(self, request: pb.ExecRequest, context: Any) -> pb.ExecResponse:
        self._running(request, "Exec")
        if not request.cmd:
            raise InvalidArgument("Exec: cmd is empty")
        return pb.ExecResponse(url=self.streaming.url("exec", request))

    async def Attach(self, request: pb.AttachRequest, context: Any) -> pb.AttachResponse:
        self._running(request, "Attach")
        return pb.AttachResponse(url=self.streaming.url("attach", request))

    async def PortForward(self, request: pb.PortForwardRequest, context: Any) -> pb.PortForwardResponse:
        if not request.pod_sandbox_id:
            raise InvalidArgument("PortForward: pod_sandbox_id is empty")
        sb = self.pods.get(request.pod_sandbox_id)
        if sb.state != State.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
        bad = [p for p in request.port if not 0 < p < 65536]
        if bad:
            raise InvalidArgument(f"PortForward: invalid port {bad[0]}: must be 1-65535")
        # the request is kept with its full id: a prefix might name another pod by the time the client comes
        full = pb.PortForwardRequest(pod_sandbox_id=sb.id, port=request.port)
        return pb.PortForwardResponse(url=self.streaming.url("portforward", full))


def container_stats(c: Container, usage: Usage, nano_cores: int | None, mountpoint: str) -> pb.ContainerStats:
    ts = usage.timestamp
    return pb.ContainerStats(
        attributes=pb.ContainerAttributes(
            id=c.id, metadata=c.config.metadata, labels=c.config.labels, annotations=c.config.annotations
        ),
        cpu=pb.CpuUsage(timestamp=ts, usage_core_nano_seconds=u64(usage.cpu_ns), usage_nano_cores=u64(nano_cores)),
        memory=memory_usage(ts, usage),
        writable_layer=pb.FilesystemUsage(
            timestamp=ts,
            fs_id=pb.FilesystemIdentifier(mountpoint=mountpoint),
            used_bytes=pb.UInt64Value(value=usage.writable_bytes),
            inodes_used=pb.UInt64Value(value=usage.writable_inodes),
        ),
    )


def _load_json(path: str) -> object:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _need(value: str, rpc: str) -> str:
    if not value:
        raise InvalidArgument(f"{rpc}: container_id is empty")
    return value
