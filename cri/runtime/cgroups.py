"""Pod cgroups with the cgroupfs driver, on cgroup v1, v2 or both (hybrid).

kubelet normally creates a pod's cgroup (``cgroup_parent``) before
RunPodSandbox; crid creates whatever part of it is missing, in every
hierarchy, remembers what it created, and removes exactly that when the pod
goes. Containers get their own cgroups below it from the OCI runtime.
"""

import errno
import os
import time
from collections.abc import Set as AbstractSet

from cri.host import CGROUP_ROOT as CGROUP_ROOT  # re-exported: stats.py reads it from here
from cri.host import unified_cgroup


def hierarchies(root: str = CGROUP_ROOT) -> list[str]:
    """Mounted hierarchies: the v1 controllers (and the hybrid ``unified``
    v2 mount), or the root itself on a pure v2 host."""
    if unified_cgroup(root):
        return [root]
    out = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if os.path.isdir(path) and not os.path.islink(path):
            out.append(path)
    return out


def _relative(cgroup_parent: str) -> str:
    parts = [p for p in cgroup_parent.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise ValueError(f"invalid cgroup path {cgroup_parent!r}")
    return "/".join(parts)


def _inherit_cpuset(path: str) -> None:
    # a new v1 cpuset is unusable until it has cpus and mems: copy the parent's
    for name in ("cpuset.cpus", "cpuset.mems"):
        own = os.path.join(path, name)
        if os.path.exists(own):
            with open(own) as f:
                if f.read().strip():
                    continue
            with open(os.path.join(os.path.dirname(path), name)) as f:
                value = f.read().strip()
            with open(own, "w") as f:
                f.write(value)


def planned(cgroup_parent: str, shared: AbstractSet[str] = frozenset(), root: str = CGROUP_ROOT) -> list[str]:
    """What ``ensure`` would own if run now (parents before children): crid
    records it before making the directories, so that recovery removes them
    if crid dies in between. Directories missing from it are fine to remove."""
    rel = _relative(cgroup_parent)
    out: list[str] = []
    for hierarchy in hierarchies(root) if rel else []:
        path = hierarchy
        for part in rel.split("/"):
            path = os.path.join(path, part)
            if path in shared or not os.path.isdir(path):
                out.append(path)
    return out


def ensure(cgroup_parent: str, shared: AbstractSet[str] = frozenset(), root: str = CGROUP_ROOT) -> list[str]:
    """Create the missing directories of ``cgroup_parent`` in every hierarchy.

    Returns the directories crid owns for this pod (parents before children):
    those it created now, and those in ``shared`` (made earlier by crid for a
    pod still alive) that lie on the path. A directory is removed only when no
    live pod lists it any more."""
    rel = _relative(cgroup_parent)
    if not rel:
        return []
    created: list[str] = []
    owned: list[str] = []
    try:
        for hierarchy in hierarchies(root):
            path = hierarchy
            for part in rel.split("/"):
                path = os.path.join(path, part)
                try:
                    os.mkdir(path, 0o755)
                except FileExistsError:
                    if path in shared:
                        owned.append(path)
                    continue
                created.append(path)
                owned.append(path)
                if os.path.basename(hierarchy) == "cpuset":
                    _inherit_cpuset(path)
    except BaseException:
        remove(created)
        raise
    return owned


def remove(created: list[str], timeout: float = 5.0) -> None:
    """Remove directories made by ``ensure`` (children first). A cgroup still
    holding a dying process is busy for a moment: retry briefly. One that has
    child cgroups (another pod's, or a container's left by another tool) stays."""
    for path in reversed(created):
        if any(os.path.isdir(os.path.join(path, n)) for n in _listdir(path)):
            continue
        deadline = time.monotonic() + timeout
        while True:
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []
