"""benchmarks.commands: a command's time measured without Popen.wait(timeout)'s polling."""

import subprocess
import time

import pytest

from benchmarks import commands


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sleeps subprocess takes: Popen.wait(timeout) polls with them."""
    taken: list[float] = []
    real = time.sleep

    def sleep(seconds: float) -> None:
        taken.append(seconds)
        real(seconds)

    monkeypatch.setattr(subprocess.time, "sleep", sleep)  # type: ignore[attr-defined]
    return taken


def test_run_and_wait_block_in_waitpid_instead_of_polling(sleeps: list[float]) -> None:
    assert commands.run(["sleep", "0.05"], 5).returncode == 0
    assert commands.wait(subprocess.Popen(["sleep", "0.05"]), 5) == 0
    assert sleeps == []
    subprocess.run(["sleep", "0.05"], timeout=5)  # what the floors used: it sleeps in steps
    assert sleeps


def test_a_command_past_its_deadline_is_killed() -> None:
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        commands.run(["sleep", "30"], 0.2)
    proc = subprocess.Popen(["sleep", "30"])
    with pytest.raises(subprocess.TimeoutExpired):
        commands.wait(proc, 0.2)
    assert proc.returncode == -9
    assert time.monotonic() - t0 < 10


def test_input_output_and_check() -> None:
    done = commands.run(["cat"], 5, input=b"floor", capture_output=True)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"floor", b"")
    with pytest.raises(subprocess.CalledProcessError):
        commands.run(["false"], 5, check=True)
    assert commands.run(["false"], 5).returncode == 1
