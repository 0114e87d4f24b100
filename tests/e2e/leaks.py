"""What a crid run may leave on the system, and a check that it left nothing.

A snapshot is taken before an e2e module and compared after it: any mount,
network namespace, network interface or cgroup that appeared, and any
process still running from the tests' base directory, is a leak. Later
issues extend the snapshot as crid learns to create more kinds of things.
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_DEPTH = 5


def _mount_points() -> set[str]:
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.add(line.split()[4].encode().decode("unicode_escape"))
    return points


def _listdir(path: str) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()


def _runner_cgroup_parents() -> set[str]:
    """The parents of this process's own cgroups (e.g. ``memory/process_api``):
    whatever runs the tests makes its jobs' cgroups there, not crid."""
    parents = set()
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if path in ("", "/"):
                continue
            for name in controllers.split(",") if controllers else ["unified"]:
                parents.add(str(CGROUP_ROOT / name.removeprefix("name=") / path.strip("/")).rsplit("/", 1)[0])
    return parents


def _cgroups() -> set[str]:
    found: set[str] = set()
    runner = _runner_cgroup_parents()
    if not CGROUP_ROOT.is_dir():
        return found
    for hierarchy in CGROUP_ROOT.iterdir():
        if not hierarchy.is_dir() or hierarchy.is_symlink():
            continue
        base_depth = len(hierarchy.parts)
        for dirpath, dirnames, _ in os.walk(hierarchy):
            depth = len(Path(dirpath).parts) - base_depth
            if depth >= CGROUP_DEPTH:
                dirnames.clear()
            if dirpath.rsplit("/", 1)[0] in runner:
                dirnames.clear()
                continue
            found.add(dirpath)
    return found


def _processes_under(base: str) -> set[str]:
    me = os.getpid()
    found = set()
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline = p.info["cmdline"] or []
        if p.info["pid"] != me and any(base in arg for arg in cmdline):
            found.add(f"{p.info['pid']}: {' '.join(cmdline)}")
    return found


@dataclass
class Snapshot:
    mounts: set[str] = field(default_factory=set)
    netns: set[str] = field(default_factory=set)
    links: set[str] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)


def snapshot() -> Snapshot:
    return Snapshot(
        mounts=_mount_points(),
        netns=_listdir("/run/netns"),
        links=_listdir("/sys/class/net"),
        cgroups=_cgroups(),
    )


def leaks(before: Snapshot, base: str) -> list[str]:
    """Human-readable list of what appeared since ``before``; empty if clean."""
    after = snapshot()
    found = []
    for kind in ("mounts", "netns", "links", "cgroups"):
        for item in sorted(getattr(after, kind) - getattr(before, kind)):
            found.append(f"{kind}: {item}")
    for proc in sorted(_processes_under(base)):
        found.append(f"process: {proc}")
    return found
