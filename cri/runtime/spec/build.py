"""``SpecInputs`` -> the whole OCI runtime spec: the parts of the sibling
modules, and the linux section's namespaces, sysctls and masked paths."""

from dataclasses import dataclass

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import HOST
from cri.images.manifest import ImageConfig
from cri.runtime import namespaces as podns
from cri.runtime import userns
from cri.runtime.cdi import Registry, requested_devices
from cri.runtime.spec.devices import build_devices
from cri.runtime.spec.mounts import build_mounts
from cri.runtime.spec.process import build_process, seccomp_profile
from cri.runtime.spec.resources import apply_resources
from cri.runtime.spec.types import IDMapping, Linux, Namespace, Resources, Spec

OCI_VERSION = "1.0.2"
DEFAULT_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@dataclass(frozen=True)
class SpecInputs:
    """Everything a container's spec is made of: the request, the image, and what crid set up for it."""

    container_id: str
    config: pb.ContainerConfig
    sandbox_config: pb.PodSandboxConfig
    image_config: ImageConfig  # the image's OCI config JSON ("config": Entrypoint, Cmd, Env, User, ...)
    rootfs: str  # the container's mounted rootfs
    namespaces: dict[str, str]  # pod namespace files: "net", "ipc", "uts", "user" -> path; absent = the host's
    pid_namespace: str  # PID namespace to join for POD / TARGET, "" for a new one; ignored for NODE
    sandbox_dir: str  # holds the pod's hostname, hosts, resolv.conf
    shm: str  # the pod's /dev/shm; "" = the host's
    cgroups_path: str  # linux.cgroupsPath ("/parent/<id>")
    min_oom_score_adj: int  # crid's own oom_score_adj: lower requests are clamped to it
    hostname: str  # the pod's hostname (HOSTNAME env)
    sandbox_id: str = ""  # for the io.kubernetes.cri.sandbox-id annotation
    image_name: str = ""  # for io.kubernetes.cri.image-name; default: the request's image
    image_id: str = ""  # the image the rootfs is a fresh copy of ("": its /etc/passwd is read each time)
    rro_supported: bool = False  # whether the handler supports recursive read-only mounts


def _id_mapping(m: userns.IdMap) -> list[IDMapping]:
    return [{"containerID": m.container_id, "hostID": m.host_id, "size": m.length}]


def _user_namespace(inputs: SpecInputs, linux: Linux) -> None:
    """The pod's user namespace, joined by path; runc 1.1 also wants its maps (for the
    ids it chowns /dev/pts and the like to)."""
    opts = inputs.config.linux.security_context.namespace_options
    ids = userns.container_mapping(opts, inputs.sandbox_config.linux.security_context.namespace_options)
    if ids is None:
        return
    if "user" not in inputs.namespaces:
        raise InvalidArgument("the pod has no user namespace of its own")
    linux["namespaces"].insert(0, {"type": "user", "path": inputs.namespaces["user"]})
    linux["uidMappings"] = _id_mapping(ids.uid)
    linux["gidMappings"] = _id_mapping(ids.gid)


def _namespaces(inputs: SpecInputs, privileged: bool) -> list[Namespace]:
    opts = inputs.config.linux.security_context.namespace_options
    pod_opts = inputs.sandbox_config.linux.security_context.namespace_options
    out: list[Namespace] = [{"type": "mount"}]
    for kind, oci in (("net", "network"), ("ipc", "ipc"), ("uts", "uts")):
        if kind in inputs.namespaces:
            out.append({"type": oci, "path": inputs.namespaces[kind]})
    # a container left at POD in a host-PID pod is in the host's PID namespace (containerd joins the pause's)
    host_pid = opts.pid == pb.NODE or (opts.pid == pb.POD and pod_opts.pid == pb.NODE)
    if opts.pid == pb.TARGET and not inputs.pid_namespace:
        raise InvalidArgument("PID namespace mode TARGET needs the target container's PID namespace")
    if not host_pid:
        if opts.pid != pb.CONTAINER and inputs.pid_namespace:
            out.append({"type": "pid", "path": inputs.pid_namespace})
        else:
            out.append({"type": "pid"})
    # containerd: a private cgroup namespace on cgroup v2 only, and not for privileged containers
    if HOST.cgroup_v2() and not privileged:
        out.append({"type": "cgroup"})
    return out


def _sysctls(inputs: SpecInputs) -> dict[str, str]:
    """The pod's sysctls (containerd puts them in every container's spec);
    each must belong to a namespace the pod owns."""
    out = {}
    for key, value in inputs.sandbox_config.linux.sysctls.items():
        ns = podns.sysctl_namespace(key)
        if ns not in inputs.namespaces:
            raise InvalidArgument(f"sysctl {key!r} needs the pod's own {ns} namespace, but the pod uses the host's")
        podns.sysctl_path(key)
        if "/" in key:
            parts = key.split("/")
            if any("." in p for p in parts):
                continue  # runc reads dots as separators; the pod already applied it in its namespace
            key = ".".join(parts)
        out[key] = value
    return out


def _annotations(inputs: SpecInputs) -> dict[str, str]:
    config, pod = inputs.config, inputs.sandbox_config
    out = dict(config.annotations)
    out.update(
        {
            "io.kubernetes.cri.container-type": "container",
            "io.kubernetes.cri.container-name": config.metadata.name,
            "io.kubernetes.cri.sandbox-name": pod.metadata.name,
            "io.kubernetes.cri.sandbox-namespace": pod.metadata.namespace,
            "io.kubernetes.cri.sandbox-uid": pod.metadata.uid,
            "io.kubernetes.cri.image-name": inputs.image_name
            or config.image.user_specified_image
            or config.image.image,
        }
    )
    if inputs.sandbox_id:
        out["io.kubernetes.cri.sandbox-id"] = inputs.sandbox_id
    return out


_DEFAULT_CDI = Registry()


def build_spec(inputs: SpecInputs, cdi: Registry | None = None) -> Spec:
    """The OCI runtime spec (config.json) of a container; CDI devices from ``cdi``
    (default: the default spec dirs)."""
    config = inputs.config
    cdi_devices = requested_devices(config)
    sc = config.linux.security_context
    privileged = sc.privileged
    if privileged and not inputs.sandbox_config.linux.security_context.privileged:
        raise InvalidArgument("no privileged container allowed in sandbox")
    process = build_process(
        config,
        inputs.image_config,
        rootfs=inputs.rootfs,
        hostname=inputs.hostname,
        min_oom_score_adj=inputs.min_oom_score_adj,
        image_id=inputs.image_id,
    )

    namespaces = _namespaces(inputs, privileged)
    devices, device_rules = build_devices(config, privileged)
    resources: Resources = {"devices": device_rules}
    if config.linux.HasField("resources"):
        apply_resources(resources, config.linux.resources)

    linux: Linux = {"namespaces": namespaces, "resources": resources}
    _user_namespace(inputs, linux)
    mounts = build_mounts(
        config,
        sandbox_dir=inputs.sandbox_dir,
        shm=inputs.shm,
        rro_supported=inputs.rro_supported,
        privileged=privileged,
        cgroupns=any(n["type"] == "cgroup" for n in namespaces),
        linux=linux,
    )
    if inputs.cgroups_path:
        linux["cgroupsPath"] = inputs.cgroups_path
    if devices:
        linux["devices"] = devices
    sysctls = _sysctls(inputs)
    if sysctls:
        linux["sysctl"] = sysctls
    if not privileged:
        # kubelet sends its default lists (or exactly what the pod asks for). An empty list is
        # ambiguous in proto3: containerd reads it as "nothing masked", CRI-O as "the defaults";
        # crid takes the defaults: it does not implement kubelet's Unmasked procMount, so
        # "empty" can only mean "not set".
        linux["maskedPaths"] = list(sc.masked_paths) or list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(sc.readonly_paths) or list(DEFAULT_READONLY_PATHS)
    profile = seccomp_profile(sc, process["capabilities"])
    if profile is not None:
        linux["seccomp"] = profile

    # no "hostname": containers share the pod's UTS namespace (or the host's), where it is already set
    spec: Spec = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": inputs.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": _annotations(inputs),
        "linux": linux,
    }
    # last, as containerd's WithCDI: the edits see (and may replace) everything else
    (cdi or _DEFAULT_CDI).inject(spec, cdi_devices)
    return spec
