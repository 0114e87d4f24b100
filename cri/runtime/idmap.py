"""Idmapped mounts for containers in a pod's user namespace (runc 1.1 makes none).

Each image layer and each bind-mount source gets an idmapped clone (open_tree,
mount_setattr MOUNT_ATTR_IDMAP with the pod's user namespace, move_mount)
under the container's ``<bundle>/idmap``: its files then appear inside as
their owners on disk, the image's root as the container's root. The overlay
takes the idmapped layers as lowerdirs (it cannot be idmapped itself, and an
idmapped upper would make it read-only), with an empty upper and work dir
owned by the mapped root. Overlay keeps private clones of its layers, so the
layer clones are detached once it is mounted; the bind clones stay until the
container is removed. Everything under ``<bundle>/idmap`` is found again from
the mount table, so removal after a crash needs no other record.
"""

import contextlib
import errno
import os
import re
import subprocess
from typing import Any

from cri.errors import FailedPrecondition
from cri.host import HOST
from cri.images.snapshots import PAGE_LIMIT, VOLATILE

_REASONS = {
    errno.EINVAL: "its filesystem does not support idmapped mounts",
    errno.EPERM: "not permitted",
    errno.ENOENT: "it does not exist",
}


def _refused(what: str, exc: OSError) -> FailedPrecondition:
    reason = _REASONS.get(exc.errno or 0, exc.strerror or str(exc))
    return FailedPrecondition(f"cannot make an idmapped mount of {what} for the pod's user namespace: {reason}")


def clone(source: str, target: str, userns_path: str) -> None:
    """An idmapped clone of the mount tree at ``source`` attached at ``target``
    (made as a file or directory, like ``source``). FailedPrecondition names the
    source and the reason when the kernel or the filesystem refuses."""
    try:
        is_dir = os.path.isdir(source)
        tree = HOST.open_tree_clone(source)
    except OSError as exc:
        raise _refused(source, exc) from None
    try:
        userns = os.open(userns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            HOST.idmap_tree(tree, userns, f"idmap {source}")
        except OSError as exc:
            raise _refused(source, exc) from None
        finally:
            os.close(userns)
        if is_dir:
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            with open(target, "a"):
                pass
        HOST.move_mount(tree, target)
    finally:
        os.close(tree)


def mount_rootfs(
    layers: list[str], rootfs: str, upper: str, work: str, mapdir: str, userns_path: str, root: tuple[int, int]
) -> None:
    """The overlay of idmapped ``layers`` (top first) at ``rootfs``; ``upper`` and
    ``work`` (empty) are chowned to ``root``, the host ids of the container's root."""
    os.makedirs(mapdir, mode=0o711, exist_ok=True)
    lowers = [os.path.join(mapdir, f"l{i}") for i in range(len(layers))]
    try:
        for layer, lower in zip(layers, lowers, strict=True):
            clone(layer, lower, userns_path)
        for d in (upper, work):
            os.chown(d, *root)
        extra = f",upperdir={upper},workdir={work}{VOLATILE}"
        options = f"lowerdir={':'.join(lowers)}{extra}"
        if len(options) < PAGE_LIMIT:
            HOST.mount(
                "overlay", rootfs, "overlay", 0, options, what=f"mount the overlay of idmapped layers at {rootfs}"
            )
        else:  # as Snapshots.mount_overlay: paths relative to mount(8)'s working directory keep it in a page
            options = f"lowerdir={':'.join(os.path.basename(lower) for lower in lowers)}{extra}"
            if len(options) >= PAGE_LIMIT:
                raise FailedPrecondition(f"overlay options for {len(layers)} idmapped layers exceed one page")
            args = ["mount", "-t", "overlay", "overlay", "-o", options, rootfs]
            done = subprocess.run(args, cwd=mapdir, capture_output=True, check=False)
            if done.returncode != 0:
                message = done.stderr.decode(errors="replace").strip()
                raise OSError(f"mount the overlay of idmapped layers at {rootfs}: {message}")
    finally:
        for lower in lowers:  # the overlay holds its own clones of them
            HOST.detach_mount(lower)
            with contextlib.suppress(OSError):
                os.rmdir(lower)


def bind_sources(mounts: list[Any], mapdir: str, userns_path: str) -> None:
    """Replace each bind mount's source by an idmapped clone of it under ``mapdir``."""
    os.makedirs(mapdir, mode=0o711, exist_ok=True)
    for i, m in enumerate(mounts):
        if m.get("type") != "bind":
            continue
        target = os.path.join(mapdir, f"b{i}")
        clone(m["source"], target, userns_path)
        m["source"] = target


def mounts_under(directory: str) -> list[str]:
    """Mount points at or under ``directory`` in crid's mount table, deepest first."""
    prefix = directory.rstrip("/") + "/"
    points = []
    with open(HOST.mountinfo) as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4:
                point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
                if point == directory or point.startswith(prefix):
                    points.append(point)
    return sorted(set(points), key=len, reverse=True)


def release(mapdir: str) -> None:
    """Detach every idmapped mount under ``mapdir`` and remove the mount points;
    a missing ``mapdir`` is fine. Never recursive: a clone of a volume still
    attached raises instead of having its files deleted."""
    if not os.path.isdir(mapdir):
        return
    for point in mounts_under(mapdir):
        HOST.detach_mount(point)
    left = mounts_under(mapdir)
    if left:
        raise OSError(errno.EBUSY, f"idmapped mounts still attached: {', '.join(left)}")
    for name in os.listdir(mapdir):
        path = os.path.join(mapdir, name)
        if os.path.isdir(path) and not os.path.islink(path):
            os.rmdir(path)
        else:
            os.unlink(path)
    os.rmdir(mapdir)
