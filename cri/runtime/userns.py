"""Pod user namespaces (``hostUsers: false``): the mapping's checks, and the
pod's user namespace with its net/uts/ipc namespaces owned by it.

A multithreaded process cannot enter a new user namespace, so a short-lived
child (one unshare(2) of all kinds at once: the others are then owned by the
new user namespace) holds them while crid writes its id maps and pins each
at ``directory/<kind>``, as namespaces.create does for host-owned ones.
"""

import os
import stat
import subprocess
import sys
from dataclasses import dataclass

from cri.api.v1 import api_pb2 as pb
from cri.errors import FailedPrecondition, InvalidArgument
from cri.runtime import namespaces

CLONE_NEWUSER = 0x10000000
ID_MAX = 2**32 - 1  # (uid_t)-1 is no id
# the child: unshare, tell the parent, wait until it has pinned the namespaces (stdin closes)
_CHILD = "import os,sys\nfrom cri.host import HOST\nHOST.unshare(int(sys.argv[1]))\nos.write(1,b'u')\nos.read(0,1)\n"


@dataclass(frozen=True)
class IdMap:
    """One uid or gid mapping: ``length`` ids from ``container_id`` inside are ``host_id`` on."""

    container_id: int
    host_id: int
    length: int

    def line(self) -> str:
        return f"{self.container_id} {self.host_id} {self.length}\n"

    def to_host(self, inside: int) -> int:
        return self.host_id + inside - self.container_id


@dataclass(frozen=True)
class Mapping:
    uid: IdMap
    gid: IdMap


def _one(kind: str, maps: list[pb.IDMapping]) -> IdMap:
    if len(maps) != 1:
        raise InvalidArgument(f"user namespace mode POD needs exactly one {kind} mapping, got {len(maps)}")
    m = maps[0]
    if m.container_id != 0:
        raise InvalidArgument(f"the {kind} mapping must start at container id 0, not {m.container_id}")
    if m.length == 0:
        raise InvalidArgument(f"the {kind} mapping has length 0")
    if m.host_id + m.length > ID_MAX or m.container_id + m.length > ID_MAX:
        raise InvalidArgument(f"the {kind} mapping {m.host_id}+{m.length} overflows the id range")
    return IdMap(m.container_id, m.host_id, m.length)


def mapping(opts: pb.NamespaceOption) -> Mapping | None:
    """The pod's mapping, None for the host's user namespace; InvalidArgument for
    what crid cannot do (modes CONTAINER and TARGET, malformed maps)."""
    if not opts.HasField("userns_options") or opts.userns_options.mode == pb.NODE:
        return None
    u = opts.userns_options
    if u.mode != pb.POD:
        raise InvalidArgument(f"user namespace mode {pb.NamespaceMode.Name(u.mode)} is not supported (POD or NODE)")
    for kind, mode in (("network", opts.network), ("PID", opts.pid), ("IPC", opts.ipc)):
        if mode == pb.NODE:
            raise InvalidArgument(f"a pod in its own user namespace cannot use the host's {kind} namespace")
    return Mapping(_one("uid", list(u.uids)), _one("gid", list(u.gids)))


def container_mapping(container: pb.NamespaceOption, pod: pb.NamespaceOption) -> Mapping | None:
    """A container's user namespace is its pod's: another mode or mapping is refused."""
    theirs, ours = mapping(pod), mapping(container) if container.HasField("userns_options") else None
    if container.HasField("userns_options") and ours != theirs:
        raise InvalidArgument("the container's user namespace options differ from its pod's")
    return theirs


def create(directory: str, kinds: list[str], hostname: str, ids: Mapping) -> dict[str, str]:
    """A new user namespace with ``ids`` and new ``kinds`` (net, uts, ipc) owned
    by it, pinned at ``directory/<kind>`` (user included). Blocking: run it on
    namespaces.EXECUTOR. Returns kind -> path."""
    flags = CLONE_NEWUSER
    for kind in kinds:
        flags |= namespaces.CLONE_FLAGS[kind]
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(flags)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    paths: dict[str, str] = {}
    try:
        if child.stdout.read(1) != b"u":
            child.wait()
            err = child.stderr.read() if child.stderr else b""
            raise OSError(f"cannot create a user namespace: {err.decode(errors='replace').strip()}")
        with open(f"/proc/{child.pid}/uid_map", "w") as f:
            f.write(ids.uid.line())
        with open(f"/proc/{child.pid}/gid_map", "w") as f:
            f.write(ids.gid.line())
        paths = namespaces.pin(directory, f"/proc/{child.pid}/ns", ["user", *kinds])
    finally:
        child.stdin.close()  # the child exits: the pinned namespaces live on without it
        child.wait()
        for pipe in (child.stdout, child.stderr):
            if pipe is not None:
                pipe.close()
    try:
        namespaces.configure(paths, hostname)
    except BaseException:
        namespaces.remove(list(paths.values()))
        raise
    return paths


def oci_maps(ids: Mapping) -> dict[str, object]:
    """The spec's linux.uidMappings and gidMappings for ``ids``."""
    return {
        f"{kind}Mappings": [{"containerID": m.container_id, "hostID": m.host_id, "size": m.length}]
        for kind, m in (("uid", ids.uid), ("gid", ids.gid))
    }


def check_reachable(path: str) -> None:
    """The pod's root reaches crid's files only through directories others may
    search (it holds no host capability): FailedPrecondition if one is not."""
    current = os.path.abspath(path)
    while True:
        if os.path.exists(current) and not os.stat(current).st_mode & stat.S_IXOTH:
            raise FailedPrecondition(
                f"{current} is not searchable by others (mode o+x), so a container in a user namespace"
                f" cannot reach its files under {path}"
            )
        parent = os.path.dirname(current)
        if parent == current:
            return
        current = parent
