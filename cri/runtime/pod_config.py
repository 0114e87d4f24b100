"""A pod's CRI config read for what crid does with it: validation, its reserved
name, hostname, bandwidth annotations, and the network CNI is asked for."""

import re
from collections.abc import Mapping

from cri.api.v1 import api_pb2 as pb
from cri.cni import PodNetwork, PortMapping
from cri.errors import InvalidArgument
from cri.host import HOST
from cri.runtime import namespaces, userns
from cri.runtime.sandbox_store import Sandbox

HOST_NAME_MAX = 64
_PROTOCOLS = {pb.TCP: "tcp", pb.UDP: "udp", pb.SCTP: "sctp"}


def reserved_name(meta: pb.PodSandboxMetadata) -> str:
    return f"{meta.name}_{meta.namespace}_{meta.uid}_{meta.attempt}"


def ns_options(config: pb.PodSandboxConfig) -> pb.NamespaceOption:
    return config.linux.security_context.namespace_options


_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_SUFFIX = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}  # fmt: skip
# the bandwidth plugin's burst when kubelet gives only a rate (what containerd and CRI-O pass)
_BURST = 2**31 - 1


def bandwidth(annotations: Mapping[str, str]) -> dict[str, int] | None:
    """The CNI ``bandwidth`` runtimeConfig from kubelet's pod annotations
    ``kubernetes.io/ingress-bandwidth`` and ``kubernetes.io/egress-bandwidth``
    (Kubernetes quantities, bits per second)."""
    out: dict[str, int] = {}
    for direction in ("ingress", "egress"):
        text = annotations.get(f"kubernetes.io/{direction}-bandwidth")
        if not text:
            continue
        m = _QUANTITY.match(text.strip())
        if not m:
            raise InvalidArgument(f"annotation kubernetes.io/{direction}-bandwidth: {text!r} is not a quantity")
        out[f"{direction}Rate"] = int(float(m.group(1)) * _SUFFIX[m.group(2) or ""])
        out[f"{direction}Burst"] = _BURST
    return out or None


def pod_hostname(config: pb.PodSandboxConfig) -> str:
    """The pod's hostname; the node's when the config has none, as containerd does."""
    return config.hostname or HOST.node_name()


def host_network(config: pb.PodSandboxConfig) -> bool:
    return ns_options(config).network == pb.NODE


def validate(config: pb.PodSandboxConfig) -> None:
    meta = config.metadata
    missing = [f for f in ("name", "uid", "namespace") if not getattr(meta, f)]
    if missing:
        raise InvalidArgument(f"pod sandbox metadata lacks {', '.join(missing)}")
    bandwidth(config.annotations)
    if len(config.hostname.encode()) > HOST_NAME_MAX:
        raise InvalidArgument(f"hostname {config.hostname!r} is longer than {HOST_NAME_MAX} bytes")
    opts = ns_options(config)
    if opts.network not in (pb.POD, pb.NODE):
        raise InvalidArgument("pod network namespace must be POD or NODE")
    if opts.pid not in (pb.POD, pb.CONTAINER, pb.NODE):
        raise InvalidArgument("pod PID namespace must be POD, CONTAINER or NODE")
    userns.mapping(opts)
    own = {"uts", "net"} if opts.network != pb.NODE else set()
    if opts.ipc != pb.NODE:
        own.add("ipc")
    for key in config.linux.sysctls:
        ns = namespaces.sysctl_namespace(key)
        if ns not in own:
            raise InvalidArgument(f"sysctl {key!r} needs the pod's own {ns} namespace, but the pod uses the host's")
        namespaces.sysctl_path(key)


def pod_network(sb: Sandbox) -> PodNetwork:
    """What CNI ADD is given for a pod (its netns must be pinned)."""
    meta = sb.config.metadata
    ports = tuple(
        PortMapping(_PROTOCOLS.get(p.protocol, "tcp"), p.container_port, p.host_port, p.host_ip)
        for p in sb.config.port_mappings
        if p.host_port > 0
    )
    dns = None
    if sb.config.HasField("dns_config"):
        d = sb.config.dns_config
        dns = {"servers": list(d.servers), "searches": list(d.searches), "options": list(d.options)}
    return PodNetwork(
        id=sb.id,
        netns=sb.namespaces["net"],
        name=meta.name,
        namespace=meta.namespace,
        uid=meta.uid,
        port_mappings=ports,
        bandwidth=bandwidth(sb.config.annotations),
        dns=dns,
        cgroup_path=sb.config.linux.cgroup_parent,
    )
