"""cri.host against the real host."""

import ctypes
import errno
import os
from pathlib import Path

import pytest

from cri.host import CAPABILITIES, HOST


def test_host_capability_helpers() -> None:
    known = HOST.known_capabilities()
    assert known[:3] == ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH"]
    with open("/proc/sys/kernel/cap_last_cap") as f:
        assert len(known) == min(int(f.read()) + 1, len(CAPABILITIES))
    assert HOST.own_capabilities() <= frozenset(CAPABILITIES)


def test_libc_calls_raise_errno_with_what_they_did(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(OSError, match=rf"^\[Errno 2\] mount tmpfs on {missing}: No such file or directory$"):
        HOST.mount("shm", missing, "tmpfs", 0, "size=1m")
    with pytest.raises(OSError, match=r"bind mount net namespace: No such file"):
        HOST.mount(missing, missing, None, 4096, what="bind mount net namespace")
    HOST.detach_mount(missing)  # gone: fine
    HOST.detach_mount(str(tmp_path))  # not a mount point: fine
    fd = HOST.inotify_init1(os.O_CLOEXEC)
    try:
        with pytest.raises(OSError, match=rf"inotify_add_watch {missing}: No such file"):
            HOST.inotify_add_watch(fd, missing, 0x8)
        assert HOST.inotify_add_watch(fd, str(tmp_path), 0x8) > 0
    finally:
        os.close(fd)


def test_libc_fake_and_kernel_version(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[object, ...]] = []

    class Libc:
        def umount2(self, path: bytes, flags: int) -> int:
            calls.append((path, flags))
            ctypes.set_errno(errno.EBUSY)
            return -1

    monkeypatch.setattr(HOST, "libc", Libc())
    with pytest.raises(OSError, match="umount /x: Device or resource busy"):
        HOST.detach_mount("/x")
    assert calls == [(b"/x", 2)]
    HOST.mallopt(-8, 1)  # no mallopt in this libc: a no-op
    assert HOST.kernel_version() >= (3, 0)
    assert HOST.machine()
