"""The spec's ``mounts``: the default ones, the pod's files and /dev/shm, and
the CRI mounts with their propagation and (recursive) read-only options."""

import os
import posixpath

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import HOST
from cri.runtime.spec.types import Linux, Mount

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


def _default_mounts(privileged: bool, cgroupns: bool) -> list[Mount]:
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


def _bind(src: str, dst: str, options: list[str]) -> Mount:
    return {"destination": dst, "type": "bind", "source": src, "options": options}


def _cri_mount(m: pb.Mount, rro_supported: bool, linux: Linux) -> Mount:
    """One CRI mount as a bind mount (containerd's WithMounts), with the checks
    it and CRI-O make; may create a missing host directory."""
    if not m.host_path:
        if m.image.image:
            raise InvalidArgument(f"image volume at {m.container_path!r} was not mounted")  # resolved earlier
        raise InvalidArgument(f"mount at {m.container_path!r} has no host_path")
    if not m.container_path.startswith("/"):
        raise InvalidArgument(f"mount container_path {m.container_path!r} must be absolute")
    if len(m.uidMappings) or len(m.gidMappings):
        raise InvalidArgument(
            "per-mount uid/gid mappings are not supported (a pod in a user namespace has all its mounts idmapped)"
        )
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
    extra = list(m.mount_options)
    for opt in extra:  # before a missing source is created: a refused mount leaves nothing behind
        if opt not in _MOUNT_OPTIONS:
            raise InvalidArgument(f"mount option {opt!r} is not allowed (mount at {m.container_path})")
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
    return _bind(src, posixpath.normpath(m.container_path), ["rbind", prop, access, *extra])


def _pod_mounts(sandbox_dir: str, shm: str, readonly: bool) -> list[Mount]:
    """/etc/hostname, /etc/hosts, /etc/resolv.conf of the pod (read-only only
    with a read-only rootfs, like containerd) and /dev/shm; a missing file is
    skipped, as containerd does."""
    out = []
    mode = "ro" if readonly else "rw"
    for name, dst in (("hostname", "/etc/hostname"), ("hosts", "/etc/hosts"), ("resolv.conf", "/etc/resolv.conf")):
        src = os.path.join(sandbox_dir, name)
        if sandbox_dir and os.path.exists(src):
            out.append(_bind(src, dst, ["rbind", "rprivate", mode]))
    shm = shm or "/dev/shm"
    if os.path.exists(shm):
        out.append(_bind(shm, "/dev/shm", ["rbind", "rprivate", "rw"]))
    return out


def build_mounts(
    config: pb.ContainerConfig,
    *,
    sandbox_dir: str,
    shm: str,
    rro_supported: bool,
    privileged: bool,
    cgroupns: bool,
    linux: Linux,
) -> list[Mount]:
    """The spec's ``mounts``: default mounts, then the CRI mounts and the pod's
    mounts (files in ``sandbox_dir``, ``shm``: "" = the host's) sorted by depth
    so that a parent never shadows a child; a CRI mount replaces a pod or
    default mount at the same place, and a CRI /dev replaces all of /dev/*.
    Sets ``linux["rootfsPropagation"]`` when a mount's propagation needs it."""
    sc = config.linux.security_context
    cri = [_cri_mount(m, rro_supported, linux) for m in config.mounts]
    taken = {m["destination"] for m in cri}
    supplied = cri + [m for m in _pod_mounts(sandbox_dir, shm, sc.readonly_rootfs) if m["destination"] not in taken]
    supplied.sort(key=lambda m: m["destination"].count("/"))  # stable: CRI mounts first at equal depth
    taken = {m["destination"] for m in supplied}
    defaults = [
        m
        for m in _default_mounts(privileged, cgroupns)
        if m["destination"] not in taken and not ("/dev" in taken and m["destination"].startswith("/dev/"))
    ]
    return defaults + supplied
