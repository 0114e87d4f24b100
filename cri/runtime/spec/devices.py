"""The spec's ``linux.devices`` and the device cgroup rules (``linux.resources.devices``)."""

import os
import posixpath
import stat

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.runtime.spec.types import Device, DeviceRule

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


def _device(path: str) -> Device | None:
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


def _walk_devices(path: str, container_path: str) -> list[Device]:
    out: list[Device] = []
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


def host_devices(root: str = "/dev") -> list[Device]:
    """Every device node under ``root`` (containerd's HostDevices), for privileged containers."""
    return _walk_devices(root, root)


def _cri_devices(config: pb.ContainerConfig) -> list[tuple[Device, str]]:
    """The requested devices with their cgroup access; a directory brings every device inside it."""
    out: list[tuple[Device, str]] = []
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


def build_devices(config: pb.ContainerConfig, privileged: bool) -> tuple[list[Device], list[DeviceRule]]:
    """The spec's linux.devices and linux.resources.devices: the requested
    devices (every host device for a privileged container) and the cgroup
    rules, deny-all plus the defaults and the requested ones (CDI devices: cri.runtime.cdi)."""
    requested = _cri_devices(config)
    devices = [dev for dev, _ in requested]
    if privileged:
        paths = {d["path"] for d in devices}
        devices += [d for d in host_devices() if d["path"] not in paths]
        return devices, [{"allow": True, "access": "rwm"}]
    rules: list[DeviceRule] = [{"allow": False, "access": "rwm"}]
    for kind, major, minor in DEFAULT_DEVICE_RULES:
        rule: DeviceRule = {"allow": True, "type": kind, "major": major}
        if minor is not None:
            rule["minor"] = minor
        rule["access"] = "rwm"
        rules.append(rule)
    for dev, access in requested:
        rules.append(
            {"allow": True, "type": dev["type"], "major": dev["major"], "minor": dev["minor"], "access": access}
        )
    return devices, rules
