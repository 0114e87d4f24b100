"""UpdatePodSandboxResources: the pod-level resources and overhead kubelet sets on a resize.

The CRI calls it after kubelet has reconfigured the pod's cgroup itself, and
treats it as best effort. crid records both (reported in PodSandboxStatus
verbose info, kept across restarts) and writes the limits only into pod
cgroup directories crid created (a pod run without kubelet's cgroup
manager); a cgroup kubelet made is kubelet's to configure.
"""

import os
import re
from typing import Any

from google.protobuf import json_format

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.runtime.cgroups import CGROUP_ROOT, hierarchies
from cri.runtime.sandbox_store import Sandbox

_CPUSET = re.compile(r"^$|^\d+(-\d+)?(,\d+(-\d+)?)*$")
CFS_PERIOD_DEFAULT = 100_000  # microseconds, the kernel's and kubelet's
SHARES_MIN, SHARES_MAX = 2, 262_144


def validate(r: pb.LinuxContainerResources, what: str) -> None:
    if r.cpu_period and not 1000 <= r.cpu_period <= 1_000_000:
        raise InvalidArgument(f"{what}.cpu_period {r.cpu_period}: must be 1000-1000000 microseconds")
    if r.cpu_quota < -1 or 0 < r.cpu_quota < 1000:
        raise InvalidArgument(f"{what}.cpu_quota {r.cpu_quota}: must be -1, 0 or at least 1000 microseconds")
    if r.cpu_shares and not SHARES_MIN <= r.cpu_shares <= SHARES_MAX:
        raise InvalidArgument(f"{what}.cpu_shares {r.cpu_shares}: must be {SHARES_MIN}-{SHARES_MAX}")
    if r.memory_limit_in_bytes < 0 or r.memory_swap_limit_in_bytes < 0:
        raise InvalidArgument(f"{what}: memory limits cannot be negative")
    for name in ("cpuset_cpus", "cpuset_mems"):
        if not _CPUSET.match(getattr(r, name)):
            raise InvalidArgument(f"{what}.{name} {getattr(r, name)!r} is not a list of ranges like 0-3,6")
    for key in r.unified:
        if "/" in key or key.startswith(".") or not key:
            raise InvalidArgument(f"{what}.unified key {key!r} is not a cgroup file name")


def record(sb: Sandbox, overhead: pb.LinuxContainerResources, resources: pb.LinuxContainerResources) -> None:
    sb.pod_resources = {
        "overhead": overhead.SerializeToString().hex(),
        "resources": resources.SerializeToString().hex(),
    }


def current(sb: Sandbox) -> tuple[pb.LinuxContainerResources, pb.LinuxContainerResources]:
    """(overhead, resources): the last update's, else what RunPodSandbox was given."""
    if sb.pod_resources:
        return (
            pb.LinuxContainerResources.FromString(bytes.fromhex(sb.pod_resources["overhead"])),
            pb.LinuxContainerResources.FromString(bytes.fromhex(sb.pod_resources["resources"])),
        )
    return sb.config.linux.overhead, sb.config.linux.resources


def describe(sb: Sandbox) -> dict[str, Any]:
    """For PodSandboxStatus verbose info."""
    overhead, resources = current(sb)
    return {
        "overhead": json_format.MessageToDict(overhead, preserving_proto_field_name=True),
        "resources": json_format.MessageToDict(resources, preserving_proto_field_name=True),
        "updated": bool(sb.pod_resources),
    }


def _quota(r: pb.LinuxContainerResources, period: int) -> int:
    """r's quota per ``period`` (0: none)."""
    if r.cpu_quota <= 0:
        return 0
    return r.cpu_quota * period // (r.cpu_period or CFS_PERIOD_DEFAULT)


def limits(overhead: pb.LinuxContainerResources, resources: pb.LinuxContainerResources) -> dict[str, int]:
    """The pod cgroup's limits, as kubelet computes them: the containers' sum plus the overhead.
    Zero means unlimited (memory, quota) or the kernel default (shares)."""
    period = resources.cpu_period or CFS_PERIOD_DEFAULT
    memory = resources.memory_limit_in_bytes
    quota = _quota(resources, period)
    return {
        "memory": memory + overhead.memory_limit_in_bytes if memory else 0,
        "cpu_period": period,
        "cpu_quota": quota + _quota(overhead, period) if quota else 0,
        "cpu_shares": min(resources.cpu_shares + overhead.cpu_shares, SHARES_MAX),
    }


def _v2_weight(shares: int) -> int:
    # the conversion runc and kubelet use from cgroup v1 shares to v2 weight
    return 1 + ((shares - 2) * 9999) // 262142


def writes(cgroup_parent: str, owned: list[str], lim: dict[str, int], root: str = CGROUP_ROOT) -> list[tuple[str, str]]:
    """(file, value) to write: the pod cgroup in each hierarchy crid created it in."""
    rel = cgroup_parent.strip("/")
    out: list[tuple[str, str]] = []
    for hierarchy in hierarchies(root):
        path = os.path.join(hierarchy, rel)
        if path not in owned:
            continue
        kind = os.path.basename(hierarchy)
        shares = lim["cpu_shares"]
        if hierarchy == root:  # pure cgroup v2
            quota = str(lim["cpu_quota"]) if lim["cpu_quota"] else "max"
            out.append((os.path.join(path, "memory.max"), str(lim["memory"]) if lim["memory"] else "max"))
            out.append((os.path.join(path, "cpu.max"), f"{quota} {lim['cpu_period']}"))
            if shares:
                out.append((os.path.join(path, "cpu.weight"), str(_v2_weight(shares))))
        elif kind == "memory":
            out.append((os.path.join(path, "memory.limit_in_bytes"), str(lim["memory"] or -1)))
        elif kind == "cpu":
            out.append((os.path.join(path, "cpu.cfs_period_us"), str(lim["cpu_period"])))
            out.append((os.path.join(path, "cpu.cfs_quota_us"), str(lim["cpu_quota"] or -1)))
            if shares:
                out.append((os.path.join(path, "cpu.shares"), str(shares)))
    return out


def apply(sb: Sandbox, root: str = CGROUP_ROOT) -> list[str]:
    """Write the recorded limits into the pod cgroups crid owns. Blocking. Returns the files written."""
    parent = sb.config.linux.cgroup_parent
    if not parent or not sb.cgroups:
        return []
    done = []
    for path, value in writes(parent, sb.cgroups, limits(*current(sb)), root):
        with open(path, "w") as f:
            f.write(value)
        done.append(path)
    return done
