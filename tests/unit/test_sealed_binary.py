"""The OCI runtime's sealed copy: executable, sealed as runc wants it, following the file on disk."""

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.runtime import sealed_binary


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    sealed_binary.forget()
    yield
    sealed_binary.forget()


def _fd(path: str) -> int:
    prefix = f"/proc/{os.getpid()}/fd/"
    assert path.startswith(prefix), path
    return int(path[len(prefix) :])


def test_an_elf_binary_runs_from_a_sealed_copy(tmp_path: Path) -> None:
    binary = tmp_path / "runtime"
    shutil.copy2("/bin/true", binary)
    path = sealed_binary.executable(str(binary))
    fd = _fd(path)
    assert os.readlink(path).startswith("/memfd:crid:runtime")
    assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) == sealed_binary.SEALS  # runc 1.1 wants exactly these
    assert Path(path).read_bytes() == binary.read_bytes()
    assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC  # no child inherits it
    writer = os.open(path, os.O_WRONLY)
    try:
        with pytest.raises(PermissionError):
            os.write(writer, b"x")  # sealed: nobody writes it, not even root
    finally:
        os.close(writer)
    assert subprocess.run([path]).returncode == 0
    assert sealed_binary.executable(str(binary)) == path  # one copy per binary


def test_a_changed_binary_gets_a_new_copy(tmp_path: Path) -> None:
    binary = tmp_path / "runtime"
    shutil.copy2("/bin/true", binary)
    first = sealed_binary.executable(str(binary))
    replacement = tmp_path / "new"
    shutil.copy2("/bin/false", replacement)
    os.replace(replacement, binary)  # as a package upgrade does
    second = sealed_binary.executable(str(binary))
    assert second != first and Path(second).read_bytes() == binary.read_bytes()
    assert subprocess.run([second]).returncode == 1
    assert not os.path.exists(first)  # the old copy is closed


def test_a_name_in_path_is_resolved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy2("/bin/true", tmp_path / "myruntime")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert Path(sealed_binary.executable("myruntime")).read_bytes() == Path("/bin/true").read_bytes()


def test_a_script_or_a_missing_binary_runs_from_its_path(tmp_path: Path) -> None:
    script = tmp_path / "wrapper"
    script.write_text('#!/bin/sh\nexec runc "$@"\n')
    script.chmod(0o755)
    assert sealed_binary.executable(str(script)) == str(script)
    assert sealed_binary.executable(str(tmp_path / "nope")) == str(tmp_path / "nope")
    assert sealed_binary.executable("no-such-runtime-anywhere") == "no-such-runtime-anywhere"


def test_a_copy_that_cannot_be_made_falls_back_to_the_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "runtime"
    shutil.copy2("/bin/true", binary)

    def refused(name: str, flags: int = 0) -> int:
        raise PermissionError(13, "Permission denied")  # vm.memfd_noexec=2

    monkeypatch.setattr(os, "memfd_create", refused)
    assert sealed_binary.executable(str(binary)) == str(binary)
