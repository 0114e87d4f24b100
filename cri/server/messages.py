"""CRI messages built from crid's pod and container records: what the
status, list and event calls answer."""

from cri.api.v1 import api_pb2 as pb
from cri.runtime.container_store import Container
from cri.runtime.container_store import State as CState
from cri.runtime.sandbox_store import Sandbox, State

# the field that carries the items of ListContainers, ListPodSandbox and their Stream* replies
LIST_ITEMS_FIELD = 1


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


_CONTAINER_STATES = {
    CState.CREATED: pb.CONTAINER_CREATED,
    CState.RUNNING: pb.CONTAINER_RUNNING,
    CState.EXITED: pb.CONTAINER_EXITED,
}


def container_message(c: Container) -> pb.Container:
    return pb.Container(
        id=c.id,
        pod_sandbox_id=c.sandbox_id,
        metadata=c.config.metadata,
        image=pb.ImageSpec(image=c.image_name),
        image_ref=c.image_ref,
        image_id=c.image_id,
        state=_CONTAINER_STATES.get(c.state, pb.CONTAINER_UNKNOWN),
        created_at=c.created_at,
        labels=c.config.labels,
        annotations=c.config.annotations,
    )


def container_status(c: Container) -> pb.ContainerStatus:
    return pb.ContainerStatus(
        id=c.id,
        metadata=c.config.metadata,
        state=_CONTAINER_STATES.get(c.state, pb.CONTAINER_UNKNOWN),
        created_at=c.created_at,
        started_at=c.started_at,
        finished_at=c.finished_at,
        exit_code=c.exit_code,
        image=pb.ImageSpec(image=c.image_name),
        image_ref=c.image_ref,
        image_id=c.image_id,
        reason=c.reason,
        message=c.message,
        labels=c.config.labels,
        annotations=c.config.annotations,
        mounts=c.config.mounts,
        log_path=c.log_path,
        resources=pb.ContainerResources(linux=pb.LinuxContainerResources.FromString(c.resources)),
        user=pb.ContainerUser(linux=pb.LinuxContainerUser(uid=c.uid, gid=c.gid, supplemental_groups=c.groups)),
    )


def list_item(body: bytes) -> bytes:
    """A serialized item framed as one entry of a list reply's items field (tag, length,
    body): on the wire a reply is just its entries one after the other, so cached entries
    joined are the serialized reply."""
    return _varint(LIST_ITEMS_FIELD << 3 | 2) + _varint(len(body)) + body


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
