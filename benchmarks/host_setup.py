"""The host's parts of a run: the cgroups its pods go under, free subnets for the pod networks,
the bridges left to delete."""

import contextlib
import ipaddress
import json
import os
import subprocess
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# crid's pod network is the first /16 from here on that no route uses, containerd's the next one
SUBNET_BASE = ipaddress.IPv4Network("10.89.0.0/16")


def remove_cgroups(name: str) -> None:
    """rmdir the cgroup ``/name`` and everything below it, in every hierarchy, deepest first."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / name
        if hierarchy.is_symlink() or not top.is_dir():
            continue
        dirs = [Path(d) for d, _, _ in os.walk(top)]
        for d in sorted(dirs, key=lambda x: len(x.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()


def make_cgroup(rel: str) -> None:
    """mkdir the cgroup ``rel`` (and its parents) in every hierarchy, as kubelet makes ``kubepods``
    before any pod: the pods' cgroups go below it (a new cpuset cgroup gets its parent's cpus and mems)."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in CGROUP_ROOT.iterdir():
        if hierarchy.is_symlink() or not hierarchy.is_dir():
            continue
        path = hierarchy
        for part in rel.strip("/").split("/"):
            parent, path = path, path / part
            if path.is_dir():
                continue
            path.mkdir()
            if hierarchy.name == "cpuset":
                for name in ("cpuset.cpus", "cpuset.mems"):
                    (path / name).write_text((parent / name).read_text())


def routed_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 destinations of the main routing table."""
    out = subprocess.run(["ip", "-j", "-4", "route", "show", "table", "all"], capture_output=True, text=True)
    nets = []
    for route in json.loads(out.stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            with contextlib.suppress(ValueError):
                nets.append(ipaddress.IPv4Network(dst, strict=False))
    return nets


def free_subnets(n: int, base: ipaddress.IPv4Network = SUBNET_BASE) -> list[str]:
    """``n`` /16 networks from ``base`` on that no route overlaps (another run's bridges)."""
    used = routed_networks()
    out: list[str] = []
    candidate = base
    while len(out) < n:
        if not any(candidate.overlaps(u) for u in used if u.prefixlen > 0):
            out.append(str(candidate))
        candidate = ipaddress.IPv4Network((int(candidate.network_address) + 2**16, 16))
        if not candidate.subnet_of(ipaddress.IPv4Network("10.0.0.0/8")):
            raise RuntimeError("no free /16 for the benchmark pod networks in 10.89.0.0-10.255.0.0")
    return out


def delete_link(name: str) -> None:
    if os.path.exists(f"/sys/class/net/{name}"):
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
