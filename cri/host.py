"""The host crid runs on: its facts (from /proc, /sys, uname) and its libc.

Domain code asks the one object ``HOST`` instead of reading kernel files or
calling libc itself, so that a test replaces a single fact or call on a single
object (``monkeypatch.setattr(HOST, "cgroup_v2", lambda: False)``) rather than
the globals of every module that asks. The paths it reads are attributes too,
for tests that rather hand it a fake file (``HOST.mountinfo``), and so is the
libc handle (``HOST.libc``), for a fake that records calls.

It answers the cgroup mode and controllers, the capabilities the kernel knows
and crid holds, the mount table, the kernel version, the machine and node
name; and it makes the libc calls Python's os module lacks (mount, umount2,
setns, unshare, open_tree, mount_setattr, move_mount, inotify,
sync_file_range, malloc_trim, mallopt), each checked against errno and
raised as OSError. Add a method here rather than a new
``ctypes.CDLL`` or module global elsewhere.

Nothing is cached: the mount table and cgroups change while crid runs, and a
stat or a small read per container creation is cheap.
"""

import ctypes
import errno
import os
import platform
import re
import signal
import socket
from typing import Any

CGROUP_ROOT = "/sys/fs/cgroup"
MOUNTINFO = "/proc/self/mountinfo"
MNT_DETACH = 2  # umount2: lazily, a process may still use the mount
_SYNC_FILE_RANGE_WRITE = 2  # start the write-out of the range's dirty pages, do not wait for it
_PR_SET_PDEATHSIG = 1
# the new mount API (include/uapi/linux/mount.h); its syscall numbers are the same on every architecture
_SYS_OPEN_TREE, _SYS_MOVE_MOUNT, _SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE = 1
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
# crid's one libc handle; use_errno: ctypes keeps each thread's errno for get_errno
_LIBC = ctypes.CDLL(None, use_errno=True)

# Linux capability names by number (include/uapi/linux/capability.h): what
# cap_last_cap and the CapPrm bit mask are decoded with
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)


class Host:
    """The host's facts, one method each; the attributes are the files read."""

    def __init__(self) -> None:
        self.cgroup_root = CGROUP_ROOT
        self.mountinfo = MOUNTINFO
        self.self_cgroup = "/proc/self/cgroup"
        self.self_status = "/proc/self/status"
        self.cap_last_cap = "/proc/sys/kernel/cap_last_cap"
        self.libc: Any = _LIBC

    # ------------------------------------------------------------ cgroups

    def cgroup_v2(self) -> bool:
        """A pure cgroup v2 host (what containerd calls unified mode)."""
        return unified_cgroup(self.cgroup_root)

    def swap_available(self) -> bool:
        """containerd's SwapControllerAvailable: without it, no swap limit is set."""
        if self.cgroup_v2():
            try:
                with open(self.self_cgroup) as f:
                    rel = next((line.strip()[3:] for line in f if line.startswith("0::")), "/")
            except OSError:
                return False
            return os.path.exists(os.path.join(self.cgroup_root, rel.lstrip("/"), "memory.swap.max"))
        return os.path.exists(os.path.join(self.cgroup_root, "memory", "memory.memsw.limit_in_bytes"))

    def hugetlb_available(self) -> bool:
        """Whether the hugetlb controller is there (v2: enabled at the root)."""
        if self.cgroup_v2():
            try:
                with open(os.path.join(self.cgroup_root, "cgroup.controllers")) as f:
                    return "hugetlb" in f.read().split()
            except OSError:
                return False
        return os.path.isdir(os.path.join(self.cgroup_root, "hugetlb"))

    # ------------------------------------------------------------ capabilities

    def known_capabilities(self) -> list[str]:
        """Every capability this kernel knows (cap_last_cap); all of them if it cannot be read."""
        try:
            with open(self.cap_last_cap) as f:
                last = int(f.read().strip())
        except (OSError, ValueError):
            last = len(CAPABILITIES) - 1
        return list(CAPABILITIES[: last + 1])

    def own_capabilities(self) -> frozenset[str]:
        """The capabilities crid holds (CapPrm): runc cannot give a container more."""
        try:
            with open(self.self_status) as f:
                line = next(line for line in f if line.startswith("CapPrm:"))
            mask = int(line.split()[1], 16)
        except (OSError, StopIteration, ValueError, IndexError):
            return frozenset(CAPABILITIES)
        return frozenset(name for bit, name in enumerate(CAPABILITIES) if mask & (1 << bit))

    # ------------------------------------------------------------ mounts

    def mount_tags(self, path: str) -> list[str] | None:
        """The optional fields (shared:N, master:N, ...) of the mount holding
        ``path``, None if no mount holds it. Raises OSError if the mount
        table cannot be read."""
        best: tuple[int, list[str]] | None = None
        with open(self.mountinfo) as f:
            lines = f.read().splitlines()
        for line in lines:
            fields = line.split()
            if "-" not in fields or len(fields) < 7:
                continue
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])  # mountinfo escapes " " as \040
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            # ">=": of equal mount points the later line is the one on top
            if inside and (best is None or len(point) >= best[0]):
                best = (len(point), fields[6 : fields.index("-")])
        return None if best is None else best[1]

    def cgroup2_options(self) -> list[str]:
        """The superblock options of the cgroup2 mount at the cgroup root; []
        if there is none or the mount table cannot be read."""
        try:
            with open(self.mountinfo) as f:
                for line in f:
                    fields = line.split()
                    if len(fields) > 4 and fields[4] == self.cgroup_root and "-" in fields:
                        tail = fields[fields.index("-") + 1 :]
                        if len(tail) >= 3 and tail[0] == "cgroup2":
                            return tail[2].split(",")
        except OSError:
            pass
        return []

    # ------------------------------------------------------------ identity

    def node_name(self) -> str:
        return socket.gethostname()

    def machine(self) -> str:
        """uname's machine (x86_64, aarch64, ...)."""
        return platform.machine()

    def kernel_version(self) -> tuple[int, int]:
        """(major, minor) of the running kernel; (0, 0) where uname says no numbers."""
        numbers = [int(n) for n in re.findall(r"\d+", os.uname().release)[:2]]
        numbers += [0] * (2 - len(numbers))
        return numbers[0], numbers[1]

    # ------------------------------------------------------------ libc

    def _check(self, result: int, what: str) -> int:
        """libc's -1 as OSError(errno, "<what>: <strerror>")."""
        if result < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return result

    def mount(
        self, source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None, what: str = ""
    ) -> None:
        """mount(2); the error reads "<what>: ...", by default "mount <fstype> on <target>: ..."."""
        result = self.libc.mount(source.encode(), target.encode(), _opt(fstype), flags, _opt(data))
        self._check(result, what or f"mount {fstype} on {target}")

    def detach_mount(self, path: str) -> None:
        """Unmount ``path`` lazily if it is a mount point; one that is not (EINVAL) or is
        gone (ENOENT) is fine."""
        if self.libc.umount2(path.encode(), MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, f"umount {path}: {os.strerror(err)}")

    def open_tree_clone(self, path: str) -> int:
        """open_tree(2): a detached clone of the mount tree at ``path`` (recursive), as an fd."""
        flags = OPEN_TREE_CLONE | os.O_CLOEXEC | AT_RECURSIVE
        return self._check(self.libc.syscall(_SYS_OPEN_TREE, AT_FDCWD, path.encode(), flags), f"clone mount {path}")

    def idmap_tree(self, tree_fd: int, userns_fd: int, what: str) -> None:
        """mount_setattr(2) MOUNT_ATTR_IDMAP on a detached tree (every mount in it):
        its files then appear with the ids as the user namespace maps them."""
        attr = _MountAttr(attr_set=MOUNT_ATTR_IDMAP, userns_fd=userns_fd)
        flags = AT_EMPTY_PATH | AT_RECURSIVE
        result = self.libc.syscall(_SYS_MOUNT_SETATTR, tree_fd, b"", flags, ctypes.byref(attr), ctypes.sizeof(attr))
        self._check(result, what)

    def move_mount(self, tree_fd: int, target: str) -> None:
        """move_mount(2): attach a detached tree at ``target``."""
        result = self.libc.syscall(_SYS_MOVE_MOUNT, tree_fd, b"", AT_FDCWD, target.encode(), MOVE_MOUNT_F_EMPTY_PATH)
        self._check(result, f"attach mount at {target}")

    def setns(self, fd: int, nstype: int, what: str) -> None:
        self._check(self.libc.setns(fd, nstype), what)

    def unshare(self, flags: int) -> None:
        self._check(self.libc.unshare(flags), "unshare")

    def inotify_init1(self, flags: int) -> int:
        return self._check(self.libc.inotify_init1(flags), "inotify_init1")

    def inotify_add_watch(self, fd: int, path: str, mask: int) -> int:
        return self._check(self.libc.inotify_add_watch(fd, path.encode(), mask), f"inotify_add_watch {path}")

    def start_writeback(self, fd: int, offset: int, nbytes: int) -> None:
        """Start writing a file range's dirty pages to disk, without waiting. Best effort,
        errors ignored: the fsync that follows is what counts."""
        self.libc.sync_file_range(fd, ctypes.c_int64(offset), ctypes.c_int64(nbytes), _SYNC_FILE_RANGE_WRITE)

    def die_with_parent(self, parent: int) -> None:
        """SIGKILL this process when its parent dies (PR_SET_PDEATHSIG); exits at once
        if the parent ``parent`` is already gone."""
        self.libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    def malloc_trim(self) -> None:
        """Give the free memory at the top of glibc's main arena back to the system. Blocking."""
        self.libc.malloc_trim(0)

    def mallopt(self, param: int, value: int) -> None:
        """glibc's mallopt; a no-op outside glibc."""
        fn = getattr(self.libc, "mallopt", None)
        if fn is not None:
            fn(param, value)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def unified_cgroup(root: str) -> bool:
    """Whether the cgroup tree at ``root`` is a pure v2 one."""
    return os.path.exists(os.path.join(root, "cgroup.controllers"))


def v1_memory_cgroup(root: str) -> bool:
    """Whether the cgroup tree at ``root`` has a v1 memory hierarchy (v1 or hybrid):
    a cgroup's usage is then read from the v1 controllers."""
    return os.path.isdir(os.path.join(root, "memory"))


def _opt(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


HOST = Host()
