"""Commands run and waited for without quantizing their time.

``Popen.wait(timeout)``, and so ``subprocess.run(timeout=...)``, polls: it
sleeps 1, 2, 4, ..., 32, then 50 ms between two looks, so a 25 ms command
measured through it takes 31 ms and a 33 ms one 63 ms. A floor measured that
way is off by up to a step. Here the wait blocks in ``waitpid``, and a timer
kills the command at its deadline instead.
"""

import contextlib
import subprocess
import threading
from collections.abc import Iterator
from typing import Any


def wait(proc: subprocess.Popen[Any], timeout: float) -> int:
    """``proc``'s exit code; it is killed after ``timeout`` seconds, and TimeoutExpired raised."""
    with _deadline(proc, timeout):
        return proc.wait()


def run(
    args: list[str], timeout: float, *, check: bool = False, capture_output: bool = False, **popen: Any
) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run(args, timeout=timeout, ...)`` with ``wait``'s blocking wait; ``input``
    goes to the command's stdin."""
    data = popen.pop("input", None)
    if data is not None:
        popen["stdin"] = subprocess.PIPE
    if capture_output:
        popen.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with subprocess.Popen(args, **popen) as proc, _deadline(proc, timeout):
        out, err = proc.communicate(data)
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done


@contextlib.contextmanager
def _deadline(proc: subprocess.Popen[Any], timeout: float) -> Iterator[None]:
    expired = threading.Event()

    def kill() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
    if expired.is_set():
        raise subprocess.TimeoutExpired(proc.args, timeout)
