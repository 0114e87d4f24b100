"""ExecSync's own part: the process the runtime gets (a memfd at fd 3), the output, the exit code,
and the command killed at a timeout or when the caller goes, through the runtime's children."""

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any, cast

import pytest

from cri.errors import DeadlineExceeded
from cri.runtime import exec_sync as es
from cri.runtime import procs
from cri.runtime.oci import Runtime

pytestmark = pytest.mark.asyncio


class ShellRuntime:
    """A runtime whose exec is a shell script: $1 is the process file it was given."""

    def __init__(self, script: str) -> None:
        self.script = script
        self.calls: list[tuple[str, str | None]] = []

    def exec_command(self, container_id: str, process_path: str, pid_path: str | None) -> list[str]:
        self.calls.append((process_path, pid_path))
        return ["sh", "-c", self.script, "sh", process_path]


@pytest.fixture
def bundle(tmp_path: Path) -> str:
    spec: dict[str, Any] = {"process": {"args": ["sleep", "1"], "env": ["A=1"], "cwd": "/", "terminal": True}}
    (tmp_path / "config.json").write_text(json.dumps(spec))
    return str(tmp_path)


async def _run(runtime: ShellRuntime, bundle: str, cmd: list[str], timeout: int = 0) -> es.ExecResult:  # noqa: ASYNC109
    return await es.exec_sync(cast(Runtime, runtime), "c1", bundle, cmd, timeout)


async def test_the_process_is_a_memfd_and_the_output_is_captured(bundle: str) -> None:
    runtime = ShellRuntime('cat "$1"; echo err >&2; exit 3')
    r = await _run(runtime, bundle, ["id", "-u"])
    assert json.loads(r.stdout) == {"args": ["id", "-u"], "env": ["A=1"], "cwd": "/", "terminal": False}
    assert (r.stderr, r.exit_code) == (b"err\n", 3)
    assert runtime.calls == [("/proc/self/fd/3", None)]  # no file in the bundle, no pid file
    assert sorted(os.listdir(bundle)) == ["config.json"]


async def test_output_is_capped(bundle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(es, "EXEC_OUTPUT_LIMIT", 1000)
    r = await _run(ShellRuntime("head -c 5000 /dev/zero"), bundle, ["x"])
    assert r.stdout == bytes(1000) + b"\n[crid: output truncated at 16 MiB]\n" and r.exit_code == 0


def _gone(pid: int) -> bool:
    return procs.start_time(pid) == 0  # no such process, or a zombie


async def test_a_timeout_kills_the_command(bundle: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper"
    runtime = ShellRuntime(f"sleep 60 & echo $! > {pid_file}; wait")
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="timed out after 1s"):
        await _run(runtime, bundle, ["sleep", "60"], timeout=1)
    assert time.monotonic() - t0 < 5  # the runtime's child killed: the runtime ended at once
    assert _gone(int(pid_file.read_text()))


async def test_a_caller_gone_kills_the_command(bundle: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper"
    task = asyncio.ensure_future(_run(ShellRuntime(f"sleep 60 & echo $! > {pid_file}; wait"), bundle, ["x"]))
    while not pid_file.exists() or not pid_file.read_text():  # noqa: ASYNC110 (a shell writes the file)
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _gone(int(pid_file.read_text()))
