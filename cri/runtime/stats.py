"""Container resource usage read from cgroups (v1, v2 or hybrid) and the
container's writable layer, for ContainerStats and ListContainerStats."""

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from cri.host import v1_memory_cgroup
from cri.runtime.cgroups import CGROUP_ROOT
from cri.runtime.container_store import Container

UNLIMITED = 1 << 62  # v1 reports "no limit" as a huge page-aligned number


@dataclass(frozen=True)
class Usage:
    timestamp: int
    cpu_ns: int | None = None
    memory_usage: int | None = None
    working_set: int | None = None
    rss: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    available: int | None = None
    writable_bytes: int = 0
    writable_inodes: int = 0


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _read_stat(path: str) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(" ")
                if value.strip().isdigit():
                    out[key] = int(value)
    except OSError:
        pass
    return out


def layer_usage(upper: str) -> tuple[int, int]:
    used = inodes = 0
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            used += st.st_blocks * 512
            inodes += 1
    return used, inodes


def read_usage(cgroup_path: str, upper: str, root: str = CGROUP_ROOT) -> Usage:
    """Blocking: run it in a worker thread."""
    rel = cgroup_path.strip("/")
    now = time.time_ns()
    written, inodes = layer_usage(upper)
    v1_memory = os.path.join(root, "memory", rel)
    if v1_memory_cgroup(root):
        stat = _read_stat(os.path.join(v1_memory, "memory.stat"))
        usage = _read_int(os.path.join(v1_memory, "memory.usage_in_bytes"))
        limit = _read_int(os.path.join(v1_memory, "memory.limit_in_bytes"))
        cpu = _read_int(os.path.join(root, "cpuacct", rel, "cpuacct.usage"))
        inactive, rss = stat.get("total_inactive_file", 0), stat.get("total_rss")
        faults, major = stat.get("total_pgfault"), stat.get("total_pgmajfault")
    else:
        base = os.path.join(root, rel)
        stat = _read_stat(os.path.join(base, "memory.stat"))
        usage = _read_int(os.path.join(base, "memory.current"))
        limit = _read_int(os.path.join(base, "memory.max"))
        usec = _read_stat(os.path.join(base, "cpu.stat")).get("usage_usec")
        cpu = usec * 1000 if usec is not None else None
        inactive, rss = stat.get("inactive_file", 0), stat.get("anon")
        faults, major = stat.get("pgfault"), stat.get("pgmajfault")
    working_set = max(usage - inactive, 0) if usage is not None else None
    available = None
    if limit is not None and limit < UNLIMITED and working_set is not None:
        available = max(limit - working_set, 0)
    return Usage(
        timestamp=now,
        cpu_ns=cpu,
        memory_usage=usage,
        working_set=working_set,
        rss=rss,
        page_faults=faults,
        major_page_faults=major,
        available=available,
        writable_bytes=written,
        writable_inodes=inodes,
    )


class UsageSampler:
    """Container usage with CPU use in nanocores since each container's previous sample:
    kubelet reports that figure as it is, so crid computes it."""

    def __init__(self) -> None:
        self._cpu_samples: dict[str, tuple[int, int]] = {}  # id -> (time, cpu ns) of the last sample

    async def sample(
        self, containers: list[Container], upper: Callable[[Container], str]
    ) -> list[tuple[Container, Usage, int | None]]:
        """``upper``: where a container's writable layer is."""

        def read_all() -> list[Usage]:
            return [read_usage(c.cgroups_path, upper(c)) for c in containers]

        out = []
        for c, usage in zip(containers, await asyncio.to_thread(read_all), strict=True):
            nano_cores = None
            previous = self._cpu_samples.get(c.id)
            if usage.cpu_ns is not None:
                if previous is not None and usage.timestamp > previous[0]:
                    nano_cores = max(usage.cpu_ns - previous[1], 0) * 10**9 // (usage.timestamp - previous[0])
                self._cpu_samples[c.id] = (usage.timestamp, usage.cpu_ns)
            out.append((c, usage, nano_cores))
        return out

    def forget(self, cid: str) -> None:
        self._cpu_samples.pop(cid, None)
