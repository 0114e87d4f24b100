"""invoke.kill_orphans: what a killed crid's plugins left running is found by the mark in their
environment, killed with its process group, and waited for; nothing else is touched."""

import io
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cri.cni.invoke import OWNER_ENV, Invocation, environment, kill_orphans


def _start(owner: str | None, script: str = "sleep 60") -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    if owner is not None:
        env[OWNER_ENV] = owner
    return subprocess.Popen(["sh", "-c", script], env=env, start_new_session=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_plugins_of_this_cache_are_killed_and_no_other_process(tmp_path: Path) -> None:
    ours, pid_file = f"{tmp_path}/cni/results", tmp_path / "child.pid"
    plugin = _start(ours, f"sleep 60 & echo $! > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; wait")  # + its child
    other_crid, unmarked = _start(f"{tmp_path}/other/cni/results"), _start(None)
    try:
        deadline = time.monotonic() + 10
        while not pid_file.exists():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        started = int(pid_file.read_text())

        killed = kill_orphans(ours)

        assert sorted(killed) == sorted([plugin.pid, started])
        assert plugin.wait(5) == -9
        assert not _alive(started)
        assert other_crid.poll() is None and unmarked.poll() is None
        assert kill_orphans(ours) == []
    finally:
        for proc in (plugin, other_crid, unmarked):
            proc.kill()
            proc.wait()


def test_the_mark_is_in_every_plugins_environment() -> None:
    env = environment(Invocation("ADD", "pod", "/run/netns/x", "eth0", owner="/var/lib/crid/cni/results"))
    assert env[OWNER_ENV] == "/var/lib/crid/cni/results"
    assert OWNER_ENV not in environment(Invocation("VERSION"))  # a manager always passes its own


def test_crid_itself_is_never_one_of_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ours = f"{tmp_path}/cni/results"
    monkeypatch.setenv(OWNER_ENV, ours)  # only a child sees it in /proc; fake our own environ
    real_open = open

    def fake_open(path: str, *args: Any, **kwargs: Any) -> Any:
        if path == f"/proc/{os.getpid()}/environ":
            return io.BytesIO(f"{OWNER_ENV}={ours}\0".encode())
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", fake_open)
    assert kill_orphans(ours) == []
