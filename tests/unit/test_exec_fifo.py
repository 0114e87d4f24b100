"""exec_fifo.start against a real fifo and a writer process playing runc init: the start reads
its byte and removes the fifo; no fifo means "ask the runtime"; an init that dies or never
writes is an error, soon; and the handler probe enables it for runc 1.x only."""

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cri.errors import FailedPrecondition
from cri.runtime import exec_fifo
from cri.runtime.handlers import _is_runc_1

pytestmark = pytest.mark.asyncio

# runc init's part: open the fifo for writing (blocks until a reader comes), write "0", go on
INIT = "import os, sys, time; fd = os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b'0'); os.close(fd); time.sleep(5)"


def _fifo(tmp_path: Path) -> Path:
    path = tmp_path / exec_fifo.FIFO
    os.mkfifo(path, 0o622)
    return path


def _init(tmp_path: Path, code: str = INIT) -> subprocess.Popen[bytes]:
    # the writer opens the fifo through an fd it holds, as runc init does: the path may be gone by then
    return subprocess.Popen([sys.executable, "-c", code, str(tmp_path / exec_fifo.FIFO)])


def _gone() -> int:
    """The pid of a process that has exited and been reaped."""
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


async def test_the_start_reads_init_s_byte_and_removes_the_fifo(tmp_path: Path) -> None:
    fifo = _fifo(tmp_path)
    holder = os.open(fifo, os.O_PATH)  # init's own fd of the fifo
    init = _init(tmp_path, INIT.replace("os.open(sys.argv[1]", f"os.open('/proc/{os.getpid()}/fd/{holder}'"))
    try:
        assert await exec_fifo.start(str(tmp_path), init.pid, time_limit=10) is True
        assert not fifo.exists()
        assert init.poll() is None  # still running: it went on after its write
    finally:
        os.close(holder)
        init.kill()
        init.wait()


async def test_no_fifo_is_left_to_the_runtime(tmp_path: Path) -> None:
    assert await exec_fifo.start(str(tmp_path), os.getpid()) is False
    (tmp_path / exec_fifo.FIFO).write_text("not a fifo")
    assert await exec_fifo.start(str(tmp_path), os.getpid()) is False
    assert (tmp_path / exec_fifo.FIFO).read_text() == "not a fifo"  # left alone


async def test_an_init_that_exits_without_writing_fails_at_once(tmp_path: Path) -> None:
    _fifo(tmp_path)
    init = _init(tmp_path, "import time; time.sleep(0.3)")
    started = time.monotonic()
    try:
        with pytest.raises(FailedPrecondition, match="exited before it could be started"):
            await exec_fifo.start(str(tmp_path), init.pid, time_limit=20)
    finally:
        init.wait()
    assert time.monotonic() - started < 10


async def test_an_init_already_gone_fails(tmp_path: Path) -> None:
    _fifo(tmp_path)
    with pytest.raises(FailedPrecondition):
        await exec_fifo.start(str(tmp_path), _gone(), time_limit=5)


async def test_an_init_that_never_writes_times_out(tmp_path: Path) -> None:
    _fifo(tmp_path)
    init = _init(tmp_path, "import time; time.sleep(30)")
    try:
        with pytest.raises(FailedPrecondition, match=r"did not start it within 0\.2s"):
            await exec_fifo.start(str(tmp_path), init.pid, time_limit=0.2)
    finally:
        init.kill()
        init.wait()
    assert not asyncio.all_tasks() - {asyncio.current_task()}


async def test_only_runc_1_starts_by_its_fifo() -> None:
    runc = {"annotations": {"org.opencontainers.runc.version": "1.1.5+ds1"}}
    assert _is_runc_1(runc)
    assert not _is_runc_1({"annotations": {"org.opencontainers.runc.version": "2.0.0"}})
    assert not _is_runc_1({"annotations": {"io.github.containers.crun.version": "1.8.1"}})  # crun writes it instead
    assert not _is_runc_1({})
    assert not _is_runc_1({"annotations": ["not", "a", "map"]})
