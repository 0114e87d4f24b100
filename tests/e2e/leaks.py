"""What a crid run may leave on the system, and a check that it left nothing.

A snapshot is taken before an e2e module and compared after it: any mount,
network namespace, network interface or cgroup that appeared, and any
process still running from the tests' base directory, is a leak. Later
issues extend the snapshot as crid learns to create more kinds of things.
"""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import psutil

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_DEPTH = 5


# `ip netns add` makes /run/netns a shared mount of itself the first time it runs on a host and
# leaves it, as it should: it is the host's, not a pod's (the namespaces under it are checked)
HOST_MOUNTS = {"/run/netns"}


def _mount_points() -> set[str]:
    points = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            points.add(line.split()[4].encode().decode("unicode_escape"))
    return points - HOST_MOUNTS


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


_ID = re.compile(r"[0-9a-f]{64}")
# the image store names its files by digests and snapshot numbers, not by pod or container ids
_NOT_BY_ID = ("content", "snapshots")


def daemon_leftovers(root: str, state: str, live: set[str]) -> list[str]:
    """Files and directories under a daemon's root and state dirs whose name
    holds the id of a pod or container the daemon no longer has."""
    found = []
    for top in (root, state):
        for dirpath, dirnames, filenames in os.walk(top):
            if dirpath == root:
                dirnames[:] = [d for d in dirnames if d not in _NOT_BY_ID]
            for name in [*dirnames, *filenames]:
                ids = _ID.findall(name)
                if ids and not any(i in live for i in ids):
                    found.append(os.path.join(dirpath, name))
            dirnames[:] = [d for d in dirnames if not _ID.search(d)]  # one line per leftover tree
    return sorted(found)
