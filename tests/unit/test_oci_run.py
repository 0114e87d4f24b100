"""OciRuntime.run: stdout, the runtime's own error from its JSON log, NotFound, time limits, detached stdio."""

import asyncio
import os
from pathlib import Path

import pytest

from cri.errors import FailedPrecondition, NotFound
from cri.runtime.oci import OciRuntime


def _runtime(tmp_path: Path, body: str) -> OciRuntime:
    """A runtime whose binary is a shell script: ``$4`` is its --log path (``--root R --log L ...``)."""
    script = tmp_path / "runtime"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return OciRuntime("fake", str(script), str(tmp_path / "root"))


def test_stdout_is_returned_and_no_file_is_left_in_the_root(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, 'echo "{\\"status\\": \\"running\\"}"; echo noise >&2\n')
    assert asyncio.run(runtime.state("c1")) == {"status": "running"}
    assert os.listdir(tmp_path / "root") == []  # the log was a memfd


def test_the_error_is_the_last_error_of_its_log(tmp_path: Path) -> None:
    body = (
        'echo \'{"level":"warning","msg":"ignore me"}\' >> "$4"\n'
        'echo \'{"level":"error","msg":"first"}\' >> "$4"\n'
        "echo 'not json' >> \"$4\"\n"
        'echo \'{"level":"error","msg":"cannot start: bad things"}\' >> "$4"\n'
        "echo stderr text >&2; exit 1\n"
    )
    with pytest.raises(FailedPrecondition, match=r"^fake start: cannot start: bad things$"):
        asyncio.run(_runtime(tmp_path, body).start("c1"))


def test_stderr_then_the_exit_code_when_the_log_says_nothing(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match=r"^fake start: only on stderr$"):
        asyncio.run(_runtime(tmp_path, "echo only on stderr >&2; exit 1\n").start("c1"))
    with pytest.raises(FailedPrecondition, match=r"^fake start: exit 3$"):
        asyncio.run(_runtime(tmp_path, "exit 3\n").start("c1"))


def test_an_unknown_container_is_not_found(tmp_path: Path) -> None:
    body = 'echo \'{"level":"error","msg":"container does not exist"}\' >> "$4"; exit 1\n'
    runtime = _runtime(tmp_path, body)
    with pytest.raises(NotFound, match="container does not exist"):
        asyncio.run(runtime.start("c1"))
    assert asyncio.run(runtime.state("c1")) is None
    asyncio.run(runtime.delete("c1"))  # deleting what is not there is fine


def test_a_command_past_its_time_limit_is_killed(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, "exec sleep 30\n")
    with pytest.raises(FailedPrecondition, match=r"'start' did not finish within 0\.2s"):
        asyncio.run(runtime.run("start", "c1", time_limit=0.2))


def test_detached_its_stdio_is_dev_null(tmp_path: Path) -> None:
    out = tmp_path / "fds"
    runtime = _runtime(tmp_path, f"fds=$(readlink /proc/$$/fd/1 /proc/$$/fd/2)\necho $fds > {out}\n")
    asyncio.run(runtime.run_detached("c1", "/bundle", "/pid"))
    assert out.read_text().split() == ["/dev/null", "/dev/null"]


def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    runtime = OciRuntime("fake", str(tmp_path / "absent"), str(tmp_path / "root"))
    with pytest.raises(FailedPrecondition, match=r"cannot run the OCI runtime .*absent"):
        asyncio.run(runtime.start("c1"))
