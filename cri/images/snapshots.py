"""Unpacked layers on disk: ``snapshots/<n>/fs``, one per chain id.

Directory names are small integers (the metadata maps chain id -> n) so
that an overlay ``lowerdir`` option stays short: mounts are made from the
snapshots directory with relative paths, which keeps even images with
hundreds of layers under the kernel's one-page limit for mount options.
A layer is unpacked into ``snapshots/tmp-*`` and renamed into place only
when complete.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from cri.host import HOST

TMP_PREFIX = "tmp-"
PAGE_LIMIT = 4096
# A writable layer is never used again after a host crash (a container is never restarted,
# a new one gets a new layer), so it needs no syncing: without "volatile" (Linux 5.10) each
# unmount syncs the whole upper filesystem, 7-20 ms of RemoveContainer waiting for other writers
VOLATILE = ",volatile" if HOST.kernel_version() >= (5, 10) else ""


class Snapshots:
    def __init__(self, root: str) -> None:
        self.dir = os.path.join(root, "snapshots")
        os.makedirs(self.dir, exist_ok=True)

    def path(self, num: int) -> str:
        """The directory holding snapshot ``num``'s files."""
        return os.path.join(self.dir, str(num), "fs")

    def exists(self, num: int) -> bool:
        return os.path.isdir(self.path(num))

    def new_tmp(self) -> str:
        """A fresh ``tmp-*/fs`` directory to unpack into; returns the tmp dir."""
        tmp = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.dir)
        os.mkdir(os.path.join(tmp, "fs"), 0o755)
        return tmp

    def commit(self, tmp: str, num: int) -> None:
        os.rename(tmp, os.path.join(self.dir, str(num)))

    def remove(self, num: int) -> None:
        shutil.rmtree(os.path.join(self.dir, str(num)), ignore_errors=True)

    def detach(self, num: int) -> str:
        """Move snapshot ``num`` out of the way (to a tmp dir, which startup
        clears if the daemon dies before deleting it); returns the new path."""
        doomed = tempfile.mkdtemp(prefix=TMP_PREFIX, dir=self.dir)
        with contextlib.suppress(FileNotFoundError):
            os.rename(os.path.join(self.dir, str(num)), os.path.join(doomed, "gone"))
        return doomed

    def numbers(self) -> Iterator[int]:
        for name in os.listdir(self.dir):
            if name.isdigit():
                yield int(name)

    def clear_tmp(self) -> None:
        for name in os.listdir(self.dir):
            if name.startswith(TMP_PREFIX):
                shutil.rmtree(os.path.join(self.dir, name), ignore_errors=True)

    def lowerdir(self, nums_top_first: list[int]) -> str:
        """The overlay lowerdir option, relative to ``self.dir``."""
        return ":".join(f"{n}/fs" for n in nums_top_first)

    def mount_overlay(self, nums_top_first: list[int], target: str, upper: str = "", work: str = "") -> None:
        """Mount the layers (plus an optional upper/work pair) at ``target``.

        Run through mount(8) with the snapshots dir as its working directory so
        that the relative lowerdir paths resolve; crid's own cwd never changes.
        """
        extra = f",upperdir={upper},workdir={work}{VOLATILE}" if upper else ""
        absolute = "lowerdir=" + ":".join(self.path(n) for n in nums_top_first) + extra
        if (upper or len(nums_top_first) > 1) and len(absolute) < PAGE_LIMIT:
            HOST.mount("overlay", target, "overlay", 0, absolute)  # the common case: no process to spawn
            return
        options = f"lowerdir={self.lowerdir(nums_top_first)}{extra}"
        if len(nums_top_first) == 1 and not upper:
            # overlay needs two lower layers without an upper: bind mount instead, read-only
            args = ["mount", "--bind", "-o", "ro", self.path(nums_top_first[0]), target]
        else:
            if len(options) >= PAGE_LIMIT:
                raise OSError(f"overlay options for {len(nums_top_first)} layers exceed one page")
            args = ["mount", "-t", "overlay", "overlay", "-o", options, target]
        subprocess.run(args, cwd=self.dir, check=True, capture_output=True)
