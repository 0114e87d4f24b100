"""The spec's cgroup resources (``linux.resources`` but devices), at creation and on UpdateContainerResources."""

import copy
import re
from collections.abc import Mapping
from typing import Any, cast

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import HOST
from cri.runtime.spec.types import Cpu, Memory, Resources

_HUGEPAGE_SIZE = re.compile(r"^[1-9][0-9]*(KB|MB|GB|TB|PB)$")


def apply_resources(out: Resources, res: pb.LinuxContainerResources) -> Resources:
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
    cpu: Cpu = {**(out.get("cpu") or {})}
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
    memory: Memory = {**(out.get("memory") or {})}
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


def update_resources(spec: Mapping[str, Any], resources: pb.LinuxContainerResources) -> Resources:
    """The container's new linux.resources (for ``runc update --resources -``
    and to store back in the spec): its current ones with the request's
    non-zero values applied, as containerd's UpdateContainerResources does.
    ``spec`` is the config.json crid wrote, read back: its resources are a Resources."""
    current = cast(Resources, copy.deepcopy((spec.get("linux") or {}).get("resources") or {}))
    return apply_resources(current, resources)
