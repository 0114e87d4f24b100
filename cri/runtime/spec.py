"""A CRI CreateContainer request -> the container's OCI runtime spec (config.json).

The rules are containerd's CRI plugin (1.7 / 2.0: internal/cri/server
container_create*.go, internal/cri/opts, pkg/oci) unless a comment says
otherwise; where containerd and CRI-O differ the comment says which one crid
follows. Blocking (reads the rootfs, /dev, /proc; creates missing host
directories of mounts): call it from a worker thread.
"""

import copy
import os
import posixpath
import re
import stat
from dataclasses import dataclass
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import CAPABILITIES, HOST
from cri.runtime import namespaces as podns
from cri.runtime import seccomp
from cri.runtime.signals import signal_number as signal_number  # re-exported for callers of spec
from cri.runtime.signals import stop_signal as stop_signal
from cri.runtime.users import resolve_user

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# containerd's and docker's default set (CRI-O's is smaller: no MKNOD, NET_RAW, SYS_CHROOT, AUDIT_WRITE, SETFCAP)
DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)
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
# devices every container may use (containerd's WithDefaultUnixDevices; runc and crun add the same on their own)
DEFAULT_DEVICE_RULES: tuple[tuple[str, int, int | None], ...] = (
    ("c", 1, 3),  # null
    ("c", 1, 8),  # random
    ("c", 1, 7),  # full
    ("c", 5, 0),  # tty
    ("c", 1, 5),  # zero
    ("c", 1, 9),  # urandom
    ("c", 5, 1),  # console
    ("c", 136, None),  # pts/*
    ("c", 5, 2),  # ptmx
)
# what runc's HostDevices-like walk skips: pseudo filesystems and container-tool state
_SKIP_DEV_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})
_PROPAGATION = {
    pb.PROPAGATION_PRIVATE: "rprivate",
    pb.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    pb.PROPAGATION_BIDIRECTIONAL: "rshared",
}
# extra options a CRI mount may carry (mount_options): per-mount flags only, nothing that changes what is mounted
_MOUNT_OPTIONS = frozenset(
    {
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "noatime",
        "atime",
        "nodiratime",
        "diratime",
    }
)
_HUGEPAGE_SIZE = re.compile(r"^[1-9][0-9]*(KB|MB|GB|TB|PB)$")


@dataclass(frozen=True)
class SpecInputs:
    container_id: str
    config: pb.ContainerConfig
    sandbox_config: pb.PodSandboxConfig
    image_config: dict[str, Any]  # the image's OCI config JSON ("config": Entrypoint, Cmd, Env, User, ...)
    rootfs: str  # the container's mounted rootfs
    namespaces: dict[str, str]  # pod namespace files: "net", "ipc", "uts" -> path; absent = the host's
    pid_namespace: str  # PID namespace to join for POD / TARGET, "" for a new one; ignored for NODE
    sandbox_dir: str  # holds the pod's hostname, hosts, resolv.conf
    shm: str  # the pod's /dev/shm; "" = the host's
    cgroups_path: str  # linux.cgroupsPath ("/parent/<id>")
    min_oom_score_adj: int  # crid's own oom_score_adj: lower requests are clamped to it
    hostname: str  # the pod's hostname (HOSTNAME env)
    sandbox_id: str = ""  # for the io.kubernetes.cri.sandbox-id annotation
    image_name: str = ""  # for io.kubernetes.cri.image-name; default: the request's image
    rro_supported: bool = False  # whether the handler supports recursive read-only mounts


# ---------------------------------------------------------------- process


def _image(inputs: SpecInputs) -> dict[str, Any]:
    config = inputs.image_config.get("config") or {}
    if not isinstance(config, dict):
        raise InvalidArgument("image config: 'config' is not an object")
    for key in ("Entrypoint", "Cmd", "Env"):
        value = config.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidArgument(f"image config: {key} is not a list of strings")
    for key in ("User", "WorkingDir"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise InvalidArgument(f"image config: {key} is not a string")
    return config


def _args(config: pb.ContainerConfig, image: dict[str, Any]) -> list[str]:
    """Kubernetes' command/args over the image's Entrypoint/Cmd (containerd's WithProcessArgs)."""
    command, args = list(config.command), list(config.args)
    if not command:
        if not args:
            args = list(image.get("Cmd") or [])
        entrypoint = list(image.get("Entrypoint") or [])
        if entrypoint != [""]:  # an image may reset its entrypoint with ENTRYPOINT [""]
            command = entrypoint
    argv = command + args
    if not argv:
        raise InvalidArgument(
            "no command specified: the request has no command or args and the image no entrypoint or cmd"
        )
    return argv


def _env(config: pb.ContainerConfig, image: dict[str, Any], hostname: str) -> list[str]:
    """PATH default, TERM for a tty, HOSTNAME, then the image's env and the
    request's, each replacing an earlier value of the same name in place."""
    env: dict[str, str] = {}
    for item in [DEFAULT_PATH, *(["TERM=xterm"] if config.tty else []), f"HOSTNAME={hostname}"]:
        key, _, value = item.partition("=")
        env[key] = value
    for item in image.get("Env") or []:
        key, sep, value = item.partition("=")
        if not sep:
            env.pop(key, None)  # a bare name unsets it, as containerd reads image env
        elif key:
            env[key] = value
    for kv in config.envs:
        try:
            value = kv.value.decode()
        except UnicodeDecodeError:
            raise InvalidArgument(f"env {kv.key!r}: the value is not UTF-8") from None
        if not kv.key or "=" in kv.key or "\0" in kv.key or "\0" in value:
            raise InvalidArgument(f"invalid env name or value for {kv.key!r}")
        env[kv.key] = value
    return [f"{k}={v}" for k, v in env.items()]


def _cwd(config: pb.ContainerConfig, image: dict[str, Any]) -> str:
    cwd = config.working_dir or image.get("WorkingDir") or "/"
    # runc wants an absolute cwd; docker resolves a relative WORKDIR against /
    return posixpath.normpath(posixpath.join("/", cwd))


def _cap_name(raw: str) -> str:
    name = raw.strip().upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITIES:
        raise InvalidArgument(f"unknown capability {raw!r}")
    return name


def _capabilities(sc: pb.LinuxContainerSecurityContext) -> dict[str, list[str]]:
    """Bounding/effective/permitted from the defaults plus adds minus drops;
    inheritable stays empty (containerd 1.7+, CRI-O: CVE-2022-24769) unless
    ambient capabilities are asked for. "ALL" in add is every capability the
    kernel knows, "ALL" in drop clears the defaults first, so that
    drop ALL + add X gives exactly X."""
    known = HOST.known_capabilities()
    own = HOST.own_capabilities()
    grantable = [c for c in known if c in own]
    if sc.privileged:
        return {"bounding": grantable, "effective": list(grantable), "permitted": list(grantable)}

    def wanted(names: list[str]) -> list[str]:
        out = []
        for raw in names:
            name = _cap_name(raw)
            if name not in known:
                continue  # newer than this kernel: runc skips those as well
            if name not in own:
                raise InvalidArgument(f"capability {name} cannot be granted: crid itself does not hold it")
            out.append(name)
        return out

    caps = sc.capabilities
    add = [c for c in caps.add_capabilities if c.strip().upper() != "ALL"]
    drop = [c for c in caps.drop_capabilities if c.strip().upper() != "ALL"]
    base: list[str] = [c for c in DEFAULT_CAPS if c in grantable]
    if len(add) != len(caps.add_capabilities):
        base = grantable
    if len(drop) != len(caps.drop_capabilities):
        base = []
    ambient = wanted(list(caps.add_ambient_capabilities))
    dropped = {_cap_name(c) for c in drop}
    main = [c for c in dict.fromkeys([*base, *wanted(add), *ambient]) if c not in dropped]
    out = {"bounding": main, "effective": list(main), "permitted": list(main)}
    ambient = [c for c in dict.fromkeys(ambient) if c not in dropped]
    if ambient:
        # the CRI contract: an ambient capability is in every set (ambient needs permitted and inheritable)
        out["inheritable"] = ambient
        out["ambient"] = list(ambient)
    return out


def _check_apparmor(sc: pb.LinuxContainerSecurityContext) -> None:
    """This host has no AppArmor: like containerd, only "unconfined" (or nothing) is acceptable."""
    if sc.HasField("apparmor"):
        if sc.apparmor.profile_type != pb.SecurityProfile.Unconfined:
            raise InvalidArgument("AppArmor is not enabled on this host")
    elif sc.apparmor_profile not in ("", "unconfined"):
        raise InvalidArgument("AppArmor is not enabled on this host")


def _oom_score_adj(config: pb.ContainerConfig, minimum: int) -> int | None:
    if not config.linux.HasField("resources"):
        return None  # containerd sets none then: the process inherits crid's (the minimum anyway)
    adj = config.linux.resources.oom_score_adj
    if not -1000 <= adj <= 1000:
        raise InvalidArgument(f"oom_score_adj {adj} is outside [-1000, 1000]")
    # lowering below crid's own value needs CAP_SYS_RESOURCE (containerd's restrict_oom_score_adj)
    return max(adj, minimum)


# ---------------------------------------------------------------- mounts


def _check_propagation(src: str, propagation: int) -> None:
    """containerd's ensureShared / ensureSharedOrSlave: the source must already propagate."""
    if propagation == pb.PROPAGATION_PRIVATE:
        return
    try:
        tags = HOST.mount_tags(src)
    except OSError as exc:
        raise InvalidArgument(f"cannot read {HOST.mountinfo}: {exc.strerror}") from None
    if tags is None:
        raise InvalidArgument(f"no mount holds {src}")
    if any(t.startswith("shared:") for t in tags):
        return
    if propagation == pb.PROPAGATION_HOST_TO_CONTAINER and any(t.startswith("master:") for t in tags):
        return
    kind = "shared" if propagation == pb.PROPAGATION_BIDIRECTIONAL else "shared or slave"
    raise InvalidArgument(f"path {src} is not on a {kind} mount, as its mount propagation requires")


def _host_cgroup_options() -> list[str]:
    """Options of the host's cgroup2 mount that a container sharing its cgroup
    namespace must repeat, or the shared superblock would lose them (containerd)."""
    return [o for o in HOST.cgroup2_options() if o in ("nsdelegate", "memory_recursiveprot")]


def _default_mounts(privileged: bool, cgroupns: bool) -> list[dict[str, Any]]:
    mode = "rw" if privileged else "ro"
    cgroup_opts = ["nosuid", "noexec", "nodev", "relatime", mode]
    if not cgroupns and HOST.cgroup_v2():
        cgroup_opts += _host_cgroup_options()
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", mode]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": cgroup_opts},
    ]


def _bind(src: str, dst: str, options: list[str]) -> dict[str, Any]:
    return {"destination": dst, "type": "bind", "source": src, "options": options}


def _cri_mount(m: pb.Mount, rro_supported: bool, linux: dict[str, Any]) -> dict[str, Any]:
    """One CRI mount as a bind mount (containerd's WithMounts), with the checks
    it and CRI-O make; may create a missing host directory."""
    if not m.host_path:
        if m.image.image:
            raise InvalidArgument(f"image volume mounts are not supported (mount at {m.container_path})")
        raise InvalidArgument(f"mount at {m.container_path!r} has no host_path")
    if not m.container_path.startswith("/"):
        raise InvalidArgument(f"mount container_path {m.container_path!r} must be absolute")
    if len(m.uidMappings) or len(m.gidMappings):
        raise InvalidArgument("id-mapped mounts need user namespaces, which are not supported")
    if m.propagation not in _PROPAGATION:
        raise InvalidArgument(f"unknown mount propagation {m.propagation} for {m.host_path}")
    if m.recursive_read_only:
        # the order of these checks is containerd's and CRI-O's; critest only needs an error
        if not m.readonly:
            raise InvalidArgument(f"recursive read-only mount conflicts with RW mount (hostPath={m.host_path!r})")
        if m.propagation != pb.PROPAGATION_PRIVATE:
            name = pb.MountPropagation.Name(m.propagation)
            raise InvalidArgument(
                f"recursive read-only mount needs private propagation, got {name} (hostPath={m.host_path!r})"
            )
        if not rro_supported:
            raise InvalidArgument("recursive read-only mounts are not supported by this runtime handler")
    src = m.host_path
    if not os.path.exists(src):
        # containerd creates a missing host path as a directory (kubelet relies on it for some volumes)
        try:
            os.makedirs(src, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise InvalidArgument(f"cannot create mount source {src}: {exc.strerror}") from None
    src = os.path.realpath(src)  # the CRI contract: mount what a symlink points to
    _check_propagation(src, m.propagation)
    prop = _PROPAGATION[m.propagation]
    if prop == "rshared":
        linux["rootfsPropagation"] = "rshared"
    elif prop == "rslave" and linux.get("rootfsPropagation") not in ("rshared", "rslave"):
        linux["rootfsPropagation"] = "rslave"
    access = "rw"
    if m.readonly:
        access = "rro" if m.recursive_read_only else "ro"
    extra = list(m.mount_options)
    for opt in extra:
        if opt not in _MOUNT_OPTIONS:
            raise InvalidArgument(f"mount option {opt!r} is not allowed (mount at {m.container_path})")
    return _bind(src, posixpath.normpath(m.container_path), ["rbind", prop, access, *extra])


def _pod_mounts(inputs: SpecInputs, readonly: bool) -> list[dict[str, Any]]:
    """/etc/hostname, /etc/hosts, /etc/resolv.conf of the pod (read-only only
    with a read-only rootfs, like containerd) and /dev/shm; a missing file is
    skipped, as containerd does."""
    out = []
    mode = "ro" if readonly else "rw"
    for name, dst in (("hostname", "/etc/hostname"), ("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")):
        src = os.path.join(inputs.sandbox_dir, name)
        if inputs.sandbox_dir and os.path.exists(src):
            out.append(_bind(src, dst, ["rbind", "rprivate", mode]))
    shm = inputs.shm or "/dev/shm"
    if os.path.exists(shm):
        out.append(_bind(shm, "/dev/shm", ["rbind", "rprivate", "rw"]))
    return out


def _mounts(inputs: SpecInputs, privileged: bool, cgroupns: bool, linux: dict[str, Any]) -> list[dict[str, Any]]:
    """Default mounts, then the CRI mounts and the pod's mounts sorted by depth
    so that a parent never shadows a child; a CRI mount replaces a pod or
    default mount at the same place, and a CRI /dev replaces all of /dev/*."""
    sc = inputs.config.linux.security_context
    cri = [_cri_mount(m, inputs.rro_supported, linux) for m in inputs.config.mounts]
    taken = {m["destination"] for m in cri}
    supplied = cri + [m for m in _pod_mounts(inputs, sc.readonly_rootfs) if m["destination"] not in taken]
    supplied.sort(key=lambda m: m["destination"].count("/"))  # stable: CRI mounts first at equal depth
    taken = {m["destination"] for m in supplied}
    defaults = [
        m
        for m in _default_mounts(privileged, cgroupns)
        if m["destination"] not in taken and not ("/dev" in taken and m["destination"].startswith("/dev/"))
    ]
    return defaults + supplied


# ---------------------------------------------------------------- devices


def _device(path: str) -> dict[str, Any] | None:
    """A char or block device node (not following symlinks); None for anything else."""
    st = os.lstat(path)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {
        "path": path,
        "type": kind,
        "major": os.major(st.st_rdev),
        "minor": os.minor(st.st_rdev),
        "fileMode": stat.S_IMODE(st.st_mode),
        "uid": st.st_uid,
        "gid": st.st_gid,
    }


def _walk_devices(path: str, container_path: str) -> list[dict[str, Any]]:
    out = []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        cpath = posixpath.join(container_path, entry.name)
        if entry.is_dir(follow_symlinks=False):
            if entry.name not in _SKIP_DEV_DIRS:
                out += _walk_devices(entry.path, cpath)
            continue
        if entry.name == "console":
            continue  # the container gets its own console from the runtime
        try:
            dev = _device(entry.path)
        except FileNotFoundError:
            continue
        if dev is not None:
            dev["path"] = cpath
            out.append(dev)
    return out


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every device node under ``root`` (containerd's HostDevices), for privileged containers."""
    return _walk_devices(root, root)


def _cri_devices(config: pb.ContainerConfig) -> list[tuple[dict[str, Any], str]]:
    """The requested devices with their cgroup access; a directory brings every device inside it."""
    out = []
    for d in config.devices:
        access = d.permissions or "rwm"
        if set(access) - set("rwm"):
            raise InvalidArgument(f"device {d.host_path}: invalid permissions {d.permissions!r}")
        host = os.path.realpath(d.host_path)
        target = d.container_path or d.host_path
        if not target.startswith("/"):
            raise InvalidArgument(f"device container_path {target!r} must be absolute")
        try:
            if os.path.isdir(host):
                found = _walk_devices(host, target)
            else:
                dev = _device(host)
                if dev is None:
                    raise InvalidArgument(f"device {d.host_path} is not a device node")
                dev["path"] = target
                found = [dev]
        except FileNotFoundError:
            raise InvalidArgument(f"device {d.host_path} does not exist") from None
        out += [(dev, access) for dev in found]
    return out


def _devices(config: pb.ContainerConfig, privileged: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """linux.devices and linux.resources.devices."""
    if len(config.CDI_devices):
        # containerd fails the same way when no CDI spec resolves them; crid reads no CDI specs at all
        raise InvalidArgument(f"CDI devices are not supported: {', '.join(d.name for d in config.CDI_devices)}")
    requested = _cri_devices(config)
    devices = [dev for dev, _ in requested]
    if privileged:
        paths = {d["path"] for d in devices}
        devices += [d for d in host_devices() if d["path"] not in paths]
        return devices, [{"allow": True, "access": "rwm"}]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    for kind, major, minor in DEFAULT_DEVICE_RULES:
        rule: dict[str, Any] = {"allow": True, "type": kind, "major": major}
        if minor is not None:
            rule["minor"] = minor
        rules.append({**rule, "access": "rwm"})
    for dev, access in requested:
        rules.append(
            {"allow": True, "type": dev["type"], "major": dev["major"], "minor": dev["minor"], "access": access}
        )
    return devices, rules


# ---------------------------------------------------------------- resources


def _apply_resources(out: dict[str, Any], res: pb.LinuxContainerResources) -> dict[str, Any]:
    """containerd's WithResources onto ``out`` (an OCI linux.resources): zero
    means "not set" and leaves what is there."""
    for name, value, lo in (
        ("cpu_period", res.cpu_period, 0),
        ("cpu_shares", res.cpu_shares, 0),
        ("cpu_quota", res.cpu_quota, -1),
        ("memory_limit_in_bytes", res.memory_limit_in_bytes, -1),
        ("memory_swap_limit_in_bytes", res.memory_swap_limit_in_bytes, -1),
    ):
        if value < lo:
            raise InvalidArgument(f"{name} {value} is out of range")
    cpu: dict[str, Any] = dict(out.get("cpu") or {})
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    memory: dict[str, Any] = dict(out.get("memory") or {})
    limit, swap = res.memory_limit_in_bytes, res.memory_swap_limit_in_bytes
    if limit:
        memory["limit"] = limit
        if not swap and HOST.swap_available():
            memory["swap"] = limit  # swap limit = memory limit: no swapping unless asked
    if swap and HOST.swap_available():
        memory["swap"] = swap
    if memory:
        out["memory"] = memory
    if len(res.hugepage_limits) and HOST.hugetlb_available():
        # without the hugetlb controller containerd (tolerate_missing_hugetlb_controller) skips them
        pages = {p["pageSize"]: p for p in out.get("hugepageLimits") or []}
        for h in res.hugepage_limits:
            if not _HUGEPAGE_SIZE.match(h.page_size):
                raise InvalidArgument(f"invalid hugepage size {h.page_size!r}")
            pages[h.page_size] = {"pageSize": h.page_size, "limit": h.limit}
        out["hugepageLimits"] = list(pages.values())
    if res.unified:
        if not HOST.cgroup_v2():
            raise InvalidArgument("unified cgroup resources need a cgroup v2 host; this one runs cgroup v1")
        out["unified"] = {**(out.get("unified") or {}), **dict(res.unified)}
    return out


def update_resources(spec: dict[str, Any], resources: pb.LinuxContainerResources) -> dict[str, Any]:
    """The container's new linux.resources (for ``runc update --resources -``
    and to store back in the spec): its current ones with the request's
    non-zero values applied, as containerd's UpdateContainerResources does."""
    current = copy.deepcopy((spec.get("linux") or {}).get("resources") or {})
    return _apply_resources(current, resources)


# ---------------------------------------------------------------- namespaces, sysctls


def _check_userns(opts: pb.NamespaceOption) -> None:
    if opts.HasField("userns_options") and opts.userns_options.mode != pb.NODE:
        raise InvalidArgument("user namespaces are not supported")


def _namespaces(inputs: SpecInputs, privileged: bool) -> list[dict[str, str]]:
    opts = inputs.config.linux.security_context.namespace_options
    pod_opts = inputs.sandbox_config.linux.security_context.namespace_options
    _check_userns(opts)
    _check_userns(pod_opts)
    out = [{"type": "mount"}]
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


# ---------------------------------------------------------------- the spec


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


def build_spec(inputs: SpecInputs) -> dict[str, Any]:
    """The OCI runtime spec (config.json) of a container."""
    config = inputs.config
    sc = config.linux.security_context
    privileged = sc.privileged
    if privileged and not inputs.sandbox_config.linux.security_context.privileged:
        raise InvalidArgument("no privileged container allowed in sandbox")
    _check_apparmor(sc)
    image = _image(inputs)

    uid, gid, gids = resolve_user(inputs.rootfs, image.get("User") or "", sc)
    caps = _capabilities(sc)
    process: dict[str, Any] = {
        "terminal": config.tty,
        "user": {"uid": uid, "gid": gid, "additionalGids": gids},
        "args": _args(config, image),
        "env": _env(config, image, inputs.hostname or HOST.node_name()),
        "cwd": _cwd(config, image),
        "capabilities": caps,
        "noNewPrivileges": sc.no_new_privs,
    }
    adj = _oom_score_adj(config, inputs.min_oom_score_adj)
    if adj is not None:
        process["oomScoreAdj"] = adj

    namespaces = _namespaces(inputs, privileged)
    devices, device_rules = _devices(config, privileged)
    resources: dict[str, Any] = {"devices": device_rules}
    if config.linux.HasField("resources"):
        _apply_resources(resources, config.linux.resources)

    linux: dict[str, Any] = {"namespaces": namespaces, "resources": resources}
    mounts = _mounts(inputs, privileged, any(n["type"] == "cgroup" for n in namespaces), linux)
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
        # crid takes the defaults, since kubelet's Unmasked procMount requires user namespaces,
        # which crid rejects anyway, so "empty" can only mean "not set".
        linux["maskedPaths"] = list(sc.masked_paths) or list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(sc.readonly_paths) or list(DEFAULT_READONLY_PATHS)
    profile = seccomp.for_container(sc, caps["bounding"])
    if profile is not None:
        linux["seccomp"] = profile

    # no "hostname": containers share the pod's UTS namespace (or the host's), where it is already set
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": inputs.rootfs, "readonly": sc.readonly_rootfs},
        "mounts": mounts,
        "annotations": _annotations(inputs),
        "linux": linux,
    }
