"""Child: output captured up to a limit, the exit code, fd 3, its children, and always reaped."""

import asyncio
import os
import time

import pytest

from cri.runtime.child import Child

pytestmark = pytest.mark.asyncio


async def test_output_and_exit_code() -> None:
    child = Child(["sh", "-c", "echo out; echo err >&2; exit 7"], limit=1024)
    assert await child.communicate() == 7
    assert child.output(1) == (b"out\n", False)
    assert child.output(2) == (b"err\n", False)
    child.close()


async def test_output_beyond_the_limit_is_cut() -> None:
    child = Child(["sh", "-c", "head -c 300000 /dev/zero"], limit=100_000)
    assert await child.communicate() == 0  # the child wrote it all: the rest was read and dropped
    data, truncated = child.output(1)
    assert (len(data), truncated) == (100_000, True)
    child.close()


async def test_fd3_is_passed_and_nothing_else() -> None:
    memfd = os.memfd_create("test", os.MFD_CLOEXEC)
    os.write(memfd, b"the process")
    stray = os.open(os.devnull, os.O_RDONLY)  # Python's fds are close-on-exec: not the child's
    try:
        child = Child(["sh", "-c", f"cat /proc/self/fd/3; test -e /proc/self/fd/{stray}"], 1024, fd3=memfd)
    finally:
        os.close(memfd)
        os.close(stray)
    assert await child.communicate() == 1
    assert child.output(1)[0] == b"the process"
    child.close()


async def test_killed_by_a_signal() -> None:
    child = Child(["sleep", "30"], limit=1024)
    child.kill()
    assert await child.communicate() == -9


async def test_its_children_are_listed() -> None:
    child = Child(["sh", "-c", "sleep 30 & echo $!; wait"], limit=1024)
    while not child.output(1)[0]:  # noqa: ASYNC110 (a child's output has no event)
        await asyncio.sleep(0.01)
    sleeper = int(child.output(1)[0])
    assert child.children() == [sleeper]
    os.kill(sleeper, 9)
    assert await child.communicate() == 0


async def test_a_child_given_up_on_is_still_reaped() -> None:
    child = Child(["sh", "-c", "sleep 0.2"], limit=1024)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(child.communicate(), 0.01)
    child.close()
    deadline = time.monotonic() + 5
    while child.returncode is None and time.monotonic() < deadline:  # noqa: ASYNC110 (the reap is internal)
        await asyncio.sleep(0.02)
    assert child.returncode == 0 and not os.path.exists(f"/proc/{child.pid}")  # noqa: ASYNC240 (reaped: no zombie)


async def test_a_missing_binary_raises() -> None:
    with pytest.raises(FileNotFoundError):
        Child(["/no/such/binary"], limit=1024)


async def test_stdin_env_and_a_session_of_its_own() -> None:
    data = b"{}" * 100_000  # more than a pipe holds: nothing has to feed it while the child runs
    script = 'cat | wc -c; echo "$WHO"; ps -o sid= -p $$; echo $$'
    child = Child(["sh", "-c", script], 1024, stdin=data, env={"PATH": os.environ["PATH"], "WHO": "me"}, setsid=True)
    assert await child.communicate() == 0
    count, who, sid, pid = child.output(1)[0].decode().split()
    assert (int(count), who) == (len(data), "me")
    assert sid == pid == str(child.pid)  # it leads a session: a kill of its group reaches what it starts
    child.close()


async def test_without_stdin_or_env_it_reads_nothing_and_has_crids_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRID_TEST_MARK", "inherited")
    child = Child(["sh", "-c", "cat | wc -c; echo $CRID_TEST_MARK"], 1024)
    assert await child.communicate() == 0
    assert child.output(1)[0].split() == [b"0", b"inherited"]
    child.close()
