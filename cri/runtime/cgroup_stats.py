"""Everything a cgroup tells about its use, for pod stats and CRI metrics.

Reads cgroup v1, v2 or hybrid hosts (v1 controllers plus a cgroup2 mount at
``unified``, where only PSI lives). Absent files give None, never zero: a
value crid cannot read is left out of the answer rather than reported wrong.
Blocking: run it in a worker thread.
"""

import dataclasses
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cri.host import MOUNTINFO, v1_memory_cgroup
from cri.runtime.cgroups import CGROUP_ROOT
from cri.runtime.stats import UNLIMITED

SYS = "/sys"


@dataclass(frozen=True)
class PsiLine:
    total_us: int
    avg10: float
    avg60: float
    avg300: float


@dataclass(frozen=True)
class Pressure:
    some: PsiLine
    full: PsiLine | None  # cpu.pressure has no "full" line on older kernels


@dataclass(frozen=True)
class CgroupStats:
    timestamp: int
    cpu_ns: int | None = None
    cpu_user_ns: int | None = None
    cpu_system_ns: int | None = None
    cfs_periods: int | None = None
    cfs_throttled_periods: int | None = None
    cfs_throttled_ns: int | None = None
    memory_usage: int | None = None
    memory_max_usage: int | None = None
    working_set: int | None = None
    rss: int | None = None
    cache: int | None = None
    mapped_file: int | None = None
    kernel: int | None = None
    swap: int | None = None
    failcnt: int | None = None
    page_faults: int | None = None
    major_page_faults: int | None = None
    memory_limit: int | None = None  # None: unlimited
    oom_kills: int | None = None
    pids: int | None = None
    pids_max: int | None = None  # None: unlimited
    cpu_psi: Pressure | None = None
    memory_psi: Pressure | None = None
    io_psi: Pressure | None = None

    @property
    def available(self) -> int | None:
        if self.memory_limit is None or self.working_set is None:
            return None
        return max(self.memory_limit - self.working_set, 0)


def read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def parse_int(text: str | None) -> int | None:
    """A single number; "max" (v2) and v1's page-aligned "no limit" are None."""
    if text is None:
        return None
    text = text.strip()
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def parse_flat(text: str | None) -> dict[str, int]:
    """``key value`` lines (memory.stat, cpu.stat, memory.events, oom_control)."""
    out: dict[str, int] = {}
    for line in (text or "").splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if value.isdigit():
            out[key] = int(value)
    return out


def parse_pressure(text: str | None) -> Pressure | None:
    """A PSI file: ``some avg10=0.00 avg60=0.00 avg300=0.00 total=5232`` and a ``full`` line."""
    lines: dict[str, PsiLine] = {}
    for line in (text or "").splitlines():
        kind, *pairs = line.split()
        values = dict(p.split("=", 1) for p in pairs if "=" in p)
        try:
            lines[kind] = PsiLine(
                int(values["total"]), float(values["avg10"]), float(values["avg60"]), float(values["avg300"])
            )
        except (KeyError, ValueError):
            continue
    if "some" not in lines:
        return None
    return Pressure(lines["some"], lines.get("full"))


def _f(base: str, *parts: str) -> str | None:
    return read_text(os.path.join(base, *parts))


def _v1(root: str, rel: str, now: int) -> CgroupStats:
    mem, cpuacct = os.path.join(root, "memory", rel), os.path.join(root, "cpuacct", rel)
    stat = parse_flat(_f(mem, "memory.stat"))
    cpu_stat = parse_flat(_f(root, "cpu", rel, "cpu.stat"))
    usage = parse_int(_f(mem, "memory.usage_in_bytes"))
    throttled = cpu_stat.get("throttled_time")
    unified = os.path.join(root, "unified", rel)  # hybrid: PSI is only in the v2 mount
    return CgroupStats(
        timestamp=now,
        cpu_ns=parse_int(_f(cpuacct, "cpuacct.usage")),
        cpu_user_ns=parse_int(_f(cpuacct, "cpuacct.usage_user")),
        cpu_system_ns=parse_int(_f(cpuacct, "cpuacct.usage_sys")),
        cfs_periods=cpu_stat.get("nr_periods"),
        cfs_throttled_periods=cpu_stat.get("nr_throttled"),
        cfs_throttled_ns=throttled,
        memory_usage=usage,
        memory_max_usage=parse_int(_f(mem, "memory.max_usage_in_bytes")),
        working_set=_working_set(usage, stat.get("total_inactive_file")),
        rss=stat.get("total_rss"),
        cache=stat.get("total_cache"),
        mapped_file=stat.get("total_mapped_file"),
        kernel=parse_int(_f(mem, "memory.kmem.usage_in_bytes")),
        swap=stat.get("total_swap"),
        failcnt=parse_int(_f(mem, "memory.failcnt")),
        page_faults=stat.get("total_pgfault"),
        major_page_faults=stat.get("total_pgmajfault"),
        memory_limit=parse_int(_f(mem, "memory.limit_in_bytes")),
        oom_kills=parse_flat(_f(mem, "memory.oom_control")).get("oom_kill"),
        pids=parse_int(_f(root, "pids", rel, "pids.current")),
        pids_max=parse_int(_f(root, "pids", rel, "pids.max")),
        cpu_psi=parse_pressure(_f(unified, "cpu.pressure")),
        memory_psi=parse_pressure(_f(unified, "memory.pressure")),
        io_psi=parse_pressure(_f(unified, "io.pressure")),
    )


def _us(value: int | None) -> int | None:
    return value * 1000 if value is not None else None


def _v2(root: str, rel: str, now: int) -> CgroupStats:
    base = os.path.join(root, rel)
    stat = parse_flat(_f(base, "memory.stat"))
    cpu = parse_flat(_f(base, "cpu.stat"))
    events = parse_flat(_f(base, "memory.events"))
    usage = parse_int(_f(base, "memory.current"))
    return CgroupStats(
        timestamp=now,
        cpu_ns=_us(cpu.get("usage_usec")),
        cpu_user_ns=_us(cpu.get("user_usec")),
        cpu_system_ns=_us(cpu.get("system_usec")),
        cfs_periods=cpu.get("nr_periods"),
        cfs_throttled_periods=cpu.get("nr_throttled"),
        cfs_throttled_ns=_us(cpu.get("throttled_usec")),
        memory_usage=usage,
        memory_max_usage=parse_int(_f(base, "memory.peak")),
        working_set=_working_set(usage, stat.get("inactive_file")),
        rss=stat.get("anon"),
        cache=stat.get("file"),
        mapped_file=stat.get("file_mapped"),
        kernel=stat.get("kernel"),
        swap=parse_int(_f(base, "memory.swap.current")),
        failcnt=events.get("max"),  # times usage hit the limit, as cAdvisor reads it on v2
        page_faults=stat.get("pgfault"),
        major_page_faults=stat.get("pgmajfault"),
        memory_limit=parse_int(_f(base, "memory.max")),
        oom_kills=events.get("oom_kill"),
        pids=parse_int(_f(base, "pids.current")),
        pids_max=parse_int(_f(base, "pids.max")),
        cpu_psi=parse_pressure(_f(base, "cpu.pressure")),
        memory_psi=parse_pressure(_f(base, "memory.pressure")),
        io_psi=parse_pressure(_f(base, "io.pressure")),
    )


def _working_set(usage: int | None, inactive_file: int | None) -> int | None:
    if usage is None:
        return None
    return max(usage - (inactive_file or 0), 0)


def read(cgroup_path: str, root: str = CGROUP_ROOT) -> CgroupStats:
    """The stats of one cgroup (a path as in the OCI spec, relative to each hierarchy)."""
    rel = cgroup_path.strip("/")
    now = time.time_ns()
    if v1_memory_cgroup(root):
        return _v1(root, rel, now)
    return _v2(root, rel, now)


_SUMMED = (
    "cpu_ns", "cpu_user_ns", "cpu_system_ns", "cfs_periods", "cfs_throttled_periods", "cfs_throttled_ns",
    "memory_usage", "working_set", "rss", "cache", "mapped_file", "kernel", "swap", "failcnt", "page_faults",
    "major_page_faults", "oom_kills", "pids",
)  # fmt: skip


def total(parts: Iterable[CgroupStats], now: int | None = None) -> CgroupStats:
    """The sum of several cgroups (a pod without a cgroup of its own: its containers').

    Counters and sizes add up; a field stays None when no part has it. Peaks,
    limits and pressure do not add up and are left out."""
    items = list(parts)
    values: dict[str, Any] = {}
    for name in _SUMMED:
        known = [v for p in items if (v := getattr(p, name)) is not None]
        values[name] = sum(known) if known else None
    return dataclasses.replace(CgroupStats(timestamp=now or time.time_ns()), **values)


# --- the processes of a cgroup (the "process" metrics) ------------------------------


@dataclass(frozen=True)
class ProcessInfo:
    processes: int
    threads: int
    file_descriptors: int
    sockets: int
    max_open_files: int | None  # soft limit of the first process; None: unlimited or unknown


def pids_of(cgroup_path: str, root: str = CGROUP_ROOT) -> list[int]:
    rel = cgroup_path.strip("/")
    v1 = v1_memory_cgroup(root)
    path = os.path.join(root, "pids", rel) if v1 else os.path.join(root, rel)
    text = read_text(os.path.join(path, "cgroup.procs"))
    return [int(line) for line in (text or "").split() if line.isdigit()]


def parse_open_files_limit(text: str | None) -> int | None:
    """The soft "Max open files" of a /proc/PID/limits text."""
    for line in (text or "").splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return int(soft) if soft.isdigit() else None
    return None


def process_info(cgroup_path: str, root: str = CGROUP_ROOT, proc: str = "/proc") -> ProcessInfo:
    pids = pids_of(cgroup_path, root)
    threads = fds = sockets = 0
    for pid in pids:
        status = parse_flat((read_text(f"{proc}/{pid}/status") or "").replace(":\t", " "))
        threads += status.get("Threads", 0)
        try:
            names = os.listdir(f"{proc}/{pid}/fd")
        except OSError:  # gone meanwhile
            continue
        fds += len(names)
        for name in names:
            try:
                sockets += os.readlink(f"{proc}/{pid}/fd/{name}").startswith("socket:")
            except OSError:
                continue
    limit = parse_open_files_limit(read_text(f"{proc}/{pids[0]}/limits")) if pids else None
    return ProcessInfo(len(pids), threads, fds, sockets, limit)


# --- block I/O of a cgroup (the "diskIO" metrics) ------------------------------------


@dataclass(frozen=True)
class DeviceIo:
    """One device's I/O by a cgroup and its children, with blkio's operation names:
    Read and Write (v1 also Sync, Async, Discard and Total)."""

    device: str  # /dev/NAME as the kernel names it, else MAJ:MIN
    major: int
    minor: int
    bytes: dict[str, int]
    ios: dict[str, int]


_V2_OPS = {"rbytes": ("bytes", "Read"), "wbytes": ("bytes", "Write"), "rios": ("ios", "Read"), "wios": ("ios", "Write")}
_names: dict[tuple[int, int, str], str] = {}  # (major, minor, sys) -> /dev/NAME: a device keeps its name


def device_name(major: int, minor: int, sys: str = SYS, mountinfo: str = MOUNTINFO) -> str:
    """``/dev/NAME`` of a device as the kernel names it (its uevent's DEVNAME), as cAdvisor labels
    devices; a filesystem without a block device of its own (btrfs subvolume, overlay, tmpfs) gets
    its mount source, as cAdvisor's; else ``MAJ:MIN``."""
    key = (major, minor, sys)
    if key in _names:
        return _names[key]
    uevent = parse_uevent(read_text(os.path.join(sys, "dev", "block", f"{major}:{minor}", "uevent")))
    if "DEVNAME" in uevent:
        _names[key] = "/dev/" + uevent["DEVNAME"]
        return _names[key]
    return mount_source(f"{major}:{minor}", read_text(mountinfo)) or f"{major}:{minor}"  # not cached: mounts change


def parse_uevent(text: str | None) -> dict[str, str]:
    return dict(line.split("=", 1) for line in (text or "").splitlines() if "=" in line)


def mount_source(dev: str, mountinfo: str | None) -> str | None:
    """The source of the first mount of device ``MAJ:MIN`` in a mountinfo text."""
    for line in (mountinfo or "").splitlines():
        fields, _, tail = line.partition(" - ")
        parts, rest = fields.split(), tail.split()
        if len(parts) > 2 and parts[2] == dev and len(rest) > 1:
            return rest[1]
    return None


def parse_blkio(text: str | None) -> dict[tuple[int, int], dict[str, int]]:
    """A v1 blkio file (``8:0 Read 4096`` lines, and a ``Total`` of all devices, skipped)."""
    out: dict[tuple[int, int], dict[str, int]] = {}
    for line in (text or "").splitlines():
        dev, *rest = line.split() or [""]
        major, _, minor = dev.partition(":")
        if len(rest) == 2 and major.isdigit() and minor.isdigit() and rest[1].isdigit():
            out.setdefault((int(major), int(minor)), {})[rest[0]] = int(rest[1])
    return out


def parse_io_stat(text: str | None) -> dict[tuple[int, int], dict[str, dict[str, int]]]:
    """v2 io.stat (``8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0``), in v1's names."""
    out: dict[tuple[int, int], dict[str, dict[str, int]]] = {}
    for line in (text or "").splitlines():
        dev, *pairs = line.split() or [""]
        major, _, minor = dev.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        tables: dict[str, dict[str, int]] = {"bytes": {}, "ios": {}}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if key in _V2_OPS and value.isdigit():
                table, op = _V2_OPS[key]
                tables[table][op] = int(value)
        out[(int(major), int(minor))] = tables
    return out


def read_io(
    cgroup_path: str, root: str = CGROUP_ROOT, sys: str = SYS, mountinfo: str = MOUNTINFO
) -> list[DeviceIo] | None:
    """The cgroup's I/O per device, children included; None when there is no file to read."""
    rel = cgroup_path.strip("/")
    if v1_memory_cgroup(root):
        blkio = os.path.join(root, "blkio", rel)
        # the throttle files count whatever the I/O scheduler (blkio.io_* are CFQ's, blkio.bfq.* BFQ's);
        # where the _recursive ones are missing (older kernels) the plain ones count the same in a leaf
        texts = [_f(blkio, f"blkio.throttle.{name}_recursive") or _f(blkio, f"blkio.throttle.{name}")
                 for name in ("io_service_bytes", "io_serviced")]  # fmt: skip
        if texts[0] is None:
            return None
        served, serviced = parse_blkio(texts[0]), parse_blkio(texts[1])
        tables = {dev: {"bytes": ops, "ios": serviced.get(dev, {})} for dev, ops in served.items()}
    else:
        text = _f(root, rel, "io.stat")
        if text is None:
            return None
        tables = parse_io_stat(text)
    return [
        DeviceIo(device_name(major, minor, sys, mountinfo), major, minor, t["bytes"], t["ios"])
        for (major, minor), t in sorted(tables.items())
    ]
