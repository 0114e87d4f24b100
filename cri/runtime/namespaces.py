"""Pod namespaces pinned by bind mounts, as CRI-O's pinns does.

A worker thread unshares new net/uts/ipc namespaces, sets the hostname, brings
``lo`` up and bind-mounts ``/proc/thread-self/ns/<kind>`` onto files in the
pod's state dir, then returns to its original namespaces. Namespaces are
per-thread for these kinds, so the rest of crid never notices. The files keep
the namespaces alive until they are unmounted.
"""

import contextlib
import fcntl
import os
import socket
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from cri.errors import InvalidArgument
from cri.host import HOST

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_FLAGS = {"net": CLONE_NEWNET, "uts": CLONE_NEWUTS, "ipc": CLONE_NEWIPC}
MS_BIND = 4096
SIOCSIFFLAGS = 0x8914
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40

# Namespace work hops threads between namespaces; keep it on a few dedicated threads.
EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="crid-ns")

# sysctls that belong to a namespace a pod owns (the rest are node-wide)
IPC_SYSCTLS = ("kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.")


def _setns(fd: int, kind: str) -> None:
    HOST.setns(fd, CLONE_FLAGS[kind], f"setns {kind}")


@contextlib.contextmanager
def _entered(paths: dict[str, str]) -> Iterator[None]:
    """Run the body inside the given namespace files, then come back."""
    originals = {k: os.open(f"/proc/thread-self/ns/{k}", os.O_RDONLY | os.O_CLOEXEC) for k in paths}
    try:
        for kind, path in paths.items():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd, kind)
            finally:
                os.close(fd)
        yield
    finally:
        for kind, fd in originals.items():
            _setns(fd, kind)  # failing here would leave the thread astray: let it raise loudly
            os.close(fd)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", IFF_UP | IFF_LOOPBACK | IFF_RUNNING))


def create(directory: str, kinds: list[str], hostname: str) -> dict[str, str]:
    """New namespaces of ``kinds`` (net, uts, ipc) pinned at ``directory/<kind>``.
    Blocking: run it on EXECUTOR. Returns kind -> path."""
    if not kinds:
        return {}
    flags = 0
    for kind in kinds:
        flags |= CLONE_FLAGS[kind]
    originals = {k: os.open(f"/proc/thread-self/ns/{k}", os.O_RDONLY | os.O_CLOEXEC) for k in kinds}
    paths: dict[str, str] = {}
    try:
        HOST.unshare(flags)
        try:
            if "uts" in kinds and hostname:
                socket.sethostname(hostname)
            if "net" in kinds:
                _loopback_up()
            for kind in kinds:
                path = os.path.join(directory, kind)
                with open(path, "w"):
                    pass
                HOST.mount(f"/proc/thread-self/ns/{kind}", path, None, MS_BIND, what=f"bind mount {kind} namespace")
                paths[kind] = path
        finally:
            for kind, fd in originals.items():
                _setns(fd, kind)
    except BaseException:
        remove(list(paths.values()))
        raise
    finally:
        for fd in originals.values():
            os.close(fd)
    return paths


def pin(directory: str, ns_dir: str, kinds: list[str]) -> dict[str, str]:
    """Bind-mount ``ns_dir/<kind>`` (a process's /proc/<pid>/ns) onto
    ``directory/<kind>``; all or none. Returns kind -> path."""
    paths: dict[str, str] = {}
    try:
        for kind in kinds:
            path = os.path.join(directory, kind)
            with open(path, "w"):
                pass
            HOST.mount(os.path.join(ns_dir, kind), path, None, MS_BIND, what=f"bind mount {kind} namespace")
            paths[kind] = path
    except BaseException:
        remove(list(paths.values()))
        raise
    return paths


def configure(paths: dict[str, str], hostname: str) -> None:
    """Set the hostname in a pinned uts namespace and bring ``lo`` up in a pinned
    net one (for namespaces made elsewhere, e.g. in a pod's user namespace)."""
    entered: dict[str, str] = {k: paths[k] for k in ("uts", "net") if k in paths}
    with _entered(entered):
        if "uts" in entered and hostname:
            socket.sethostname(hostname)
        if "net" in entered:
            _loopback_up()


def remove(paths: list[str]) -> None:
    """Unmount and delete pinned namespace files; missing ones are fine."""
    for path in paths:
        HOST.detach_mount(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def is_pinned(path: str) -> bool:
    """Whether ``path`` still holds a namespace (a bind mount of nsfs)."""
    return os.path.ismount(path)


def sysctl_path(key: str) -> str:
    """``net.ipv4.ip_forward`` or ``net/ipv4/conf/eth0.100/forwarding`` -> /proc/sys path."""
    rel = key if "/" in key else key.replace(".", "/")
    if ".." in rel.split("/") or rel.startswith("/"):
        raise InvalidArgument(f"invalid sysctl name {key!r}")
    return "/proc/sys/" + rel


def sysctl_namespace(key: str) -> str:
    """Which pod namespace a sysctl belongs to; InvalidArgument for node-wide ones."""
    dotted = key.replace("/", ".")
    if dotted.startswith("net."):
        return "net"
    if dotted.startswith(IPC_SYSCTLS):
        return "ipc"
    if dotted in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    raise InvalidArgument(f"sysctl {key!r} is not namespaced: a pod cannot set it")


def apply_sysctls(paths: dict[str, str], sysctls: dict[str, str]) -> None:
    """Write ``sysctls`` inside the pod's namespaces. Blocking: run on EXECUTOR."""
    by_ns: dict[str, dict[str, str]] = {}
    for key, value in sysctls.items():
        ns = sysctl_namespace(key)
        if ns not in paths:
            raise InvalidArgument(f"sysctl {key!r} needs the pod's own {ns} namespace, but the pod uses the host's")
        by_ns.setdefault(ns, {})[key] = value
    for ns, items in by_ns.items():
        with _entered({ns: paths[ns]}):
            for key, value in items.items():
                try:
                    with open(sysctl_path(key), "w") as f:
                        f.write(value)
                except OSError as exc:
                    raise InvalidArgument(f"sysctl {key}={value!r}: {exc.strerror}") from None
