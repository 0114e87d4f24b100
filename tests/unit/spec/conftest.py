"""Fixtures of the spec tests: a fixed host, and a rootfs and pod directory to build specs for."""

from pathlib import Path

import pytest

from cri.host import CAPABILITIES, HOST


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed host: cgroup v1 without swap or hugetlb accounting, every capability known and held."""
    monkeypatch.setattr(HOST, "cgroup_v2", lambda: False)
    monkeypatch.setattr(HOST, "swap_available", lambda: False)
    monkeypatch.setattr(HOST, "hugetlb_available", lambda: False)
    monkeypatch.setattr(HOST, "known_capabilities", lambda: list(CAPABILITIES))
    monkeypatch.setattr(HOST, "own_capabilities", lambda: frozenset(CAPABILITIES))


@pytest.fixture
def env(tmp_path: Path) -> Path:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/:/bin/sh\n")
    (rootfs / "etc" / "group").write_text("root:x:0:\nwheel:x:10:app\napp:x:1000:\n")
    pod = tmp_path / "pod"
    pod.mkdir()
    for name in ("hostname", "hosts", "resolv.conf"):
        (pod / name).write_text(name + "\n")
    (tmp_path / "shm").mkdir()
    return tmp_path
