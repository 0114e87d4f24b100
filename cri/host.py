"""Facts about the host crid runs on, read from /proc and /sys.

Domain code asks the one object ``HOST`` instead of reading kernel files
itself, so that a test replaces a single fact on a single object
(``monkeypatch.setattr(HOST, "cgroup_v2", lambda: False)``) rather than the
globals of every module that asks. The paths it reads are attributes too, for
tests that rather hand it a fake file (``HOST.mountinfo``).

Today it answers what the OCI spec builder needs: the cgroup mode and
controllers, the capabilities the kernel knows and crid holds, the mount
table, the node name. It is meant to grow into crid's whole host facade
(mount, umount, setns, inotify, ...): add a method here rather than a new
module global elsewhere.

Nothing is cached: the mount table and cgroups change while crid runs, and a
stat or a small read per container creation is cheap.
"""

import os
import re
import socket

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
        self.cgroup_root = "/sys/fs/cgroup"
        self.mountinfo = "/proc/self/mountinfo"
        self.self_cgroup = "/proc/self/cgroup"
        self.self_status = "/proc/self/status"
        self.cap_last_cap = "/proc/sys/kernel/cap_last_cap"

    # ------------------------------------------------------------ cgroups

    def cgroup_v2(self) -> bool:
        """A pure cgroup v2 host (what containerd calls unified mode)."""
        return os.path.exists(os.path.join(self.cgroup_root, "cgroup.controllers"))

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


HOST = Host()
