"""What a running container sees of its image, read from the host through ``/proc/<pid>/root``, and
the differences between two such views (crid's and containerd's of the same image).

Everything mounted in the container but its root (/proc, /sys, /dev and below, the bind-mounted
/etc/hosts, /etc/hostname, /etc/resolv.conf, /dev/shm...) is left out: the runtimes make those, the
image does not. Each entry is (type, mode, uid, gid, size, symlink target, link count, and for a
regular file of at most ``HASH_LIMIT`` bytes the sha256 of its content); times are left out.
"""

import hashlib
import os
import stat
from dataclasses import dataclass

HASH_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Entry:
    kind: str  # "dir", "file", "symlink", "char", "block", "fifo", "socket"
    mode: str  # permission bits with setuid/setgid/sticky, octal
    uid: int
    gid: int
    size: int | None = None  # regular files
    target: str | None = None  # symlinks
    nlink: int | None = None  # regular files
    sha256: str | None = None  # regular files up to HASH_LIMIT

    def __str__(self) -> str:
        parts = [self.kind, self.mode, f"{self.uid}:{self.gid}"]
        if self.size is not None:
            parts.append(f"{self.size}B")
        if self.nlink is not None:
            parts.append(f"nlink={self.nlink}")
        if self.target is not None:
            parts.append(f"-> {self.target}")
        if self.sha256 is not None:
            parts.append(self.sha256[:12])
        return " ".join(parts)


_KINDS = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def _unescape(field: str) -> str:
    """A mountinfo path: spaces, tabs, newlines and backslashes are octal escapes."""
    return field.encode().decode("unicode_escape").encode("latin-1").decode(errors="surrogateescape")


def mount_points(pid: int) -> set[str]:
    """The mount points of ``pid``'s mount namespace as it sees them, but its root."""
    points = set()
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point != "/":
                points.add(point)
    return points


def _entry(path: str, st: os.stat_result) -> Entry:
    kind = _KINDS.get(stat.S_IFMT(st.st_mode), "other")
    mode = f"{stat.S_IMODE(st.st_mode):04o}"
    if kind == "symlink":
        return Entry(kind, mode, st.st_uid, st.st_gid, target=os.readlink(path))
    if kind != "file":
        return Entry(kind, mode, st.st_uid, st.st_gid)
    digest = None
    if st.st_size <= HASH_LIMIT:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return Entry(kind, mode, st.st_uid, st.st_gid, size=st.st_size, nlink=st.st_nlink, sha256=digest)


def view(pid: int) -> dict[str, Entry]:
    """Container path -> Entry of everything under the container's root but its mounts."""
    root = f"/proc/{pid}/root"
    skip = mount_points(pid)
    out: dict[str, Entry] = {"/": _entry(root, os.lstat(root))}
    stack = ["/"]
    while stack:
        rel = stack.pop()
        host = root + rel
        with os.scandir(host) as it:
            names = sorted(e.name for e in it)
        for name in names:
            child = (rel.rstrip("/") + "/" + name) if rel != "/" else "/" + name
            if child in skip:
                continue
            st = os.lstat(root + child)
            out[child] = _entry(root + child, st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(child)
    return out


def differences(
    a: dict[str, Entry], b: dict[str, Entry], a_name: str = "crid", b_name: str = "containerd"
) -> list[str]:
    """One line per path whose entry differs or that only one view has, sorted by path."""
    out = []
    for path in sorted(set(a) | set(b)):
        ea, eb = a.get(path), b.get(path)
        if ea == eb:
            continue
        if ea is None:
            out.append(f"{path}: only {b_name} has it ({eb})")
        elif eb is None:
            out.append(f"{path}: only {a_name} has it ({ea})")
        else:
            out.append(f"{path}: {a_name} {ea} / {b_name} {eb}")
    return out


def summary(entries: dict[str, Entry]) -> str:
    kinds: dict[str, int] = {}
    for e in entries.values():
        kinds[e.kind] = kinds.get(e.kind, 0) + 1
    return ", ".join(f"{n} {k}s" for k, n in sorted(kinds.items()))
