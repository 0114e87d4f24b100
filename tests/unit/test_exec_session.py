"""Exec with streams: a fake OCI runtime (no root), then real runc on a busybox container (root only)."""

import asyncio
import contextlib
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from cri.runtime import exec_session
from cri.runtime.exec_session import run_exec
from cri.runtime.oci import OciRuntime
from cri.runtime.stdio import Stdio, TerminalSize
from tests.support.stdio_fakes import Collect, Feed, sizes

TIMEOUT = 20.0

# Understands `--root R exec --process FILE --pid-file PIDFILE ID` and runs the args on the
# host. With "terminal" it does what runc does: its stdin raw, a console of its own for the
# command, copying both ways, SIGWINCH resizing the console from its stdin's size.
FAKE_RUNTIME = r"""#!PYTHON
import fcntl, json, os, select, signal, sys, termios, tty

def write_pid(path, pid):
    with open(path + ".tmp", "w") as f:
        f.write(str(pid))
    os.rename(path + ".tmp", path)

def main():
    argv = sys.argv[1:]
    assert argv[0] == "--root" and argv[2] == "exec", argv
    spec = json.load(open(argv[argv.index("--process") + 1]))
    pid_file = argv[argv.index("--pid-file") + 1]
    args, env = spec["args"], dict(e.split("=", 1) for e in spec.get("env", []))
    if not spec.get("terminal"):
        write_pid(pid_file, os.getpid())
        os.execvpe(args[0], args, env)
    tty.setraw(0, termios.TCSANOW)  # as runc: no flush of what the client typed already
    master, slave = os.openpty()
    def resize(*_):
        fcntl.ioctl(master, termios.TIOCSWINSZ, fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
    signal.signal(signal.SIGWINCH, resize)
    resize()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for fd in (0, 1, 2):
            os.dup2(slave, fd)
        os.execvpe(args[0], args, env)
    os.close(slave)
    write_pid(pid_file, pid)
    watched = [0, master]
    while True:
        ready = select.select(watched, [], [])[0]
        if 0 in ready:
            data = os.read(0, 4096)
            if data:
                os.write(master, data)
            else:
                watched.remove(0)
        if master in ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                data = b""
            if not data:
                break
            os.write(1, data)
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    return 128 - code if code < 0 else code

sys.exit(main())
"""


def lines_of(data: bytes | bytearray) -> list[str]:
    """Terminal output as lines: runc's console may add a "\r" of its own at first."""
    return re.sub(rb"\r+\n", b"\n", data).decode().split("\n")


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def gone(pid: int) -> bool:
    """Neither running nor a zombie."""
    return not os.path.exists(f"/proc/{pid}")


def leftovers(bundle: Path) -> list[str]:
    return glob.glob(str(bundle / "exec-*"))


async def pid_of_exec(bundle: Path) -> int:
    while True:
        for path in glob.glob(str(bundle / "exec-*.pid")):
            with open(path) as f:  # noqa: ASYNC230 (a few bytes on tmpfs)
                text = f.read().strip()
            if text:
                return int(text)
        await asyncio.sleep(0.01)


# --- the fake runtime ------------------------------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[tuple[OciRuntime, Path]]:
    script = tmp_path / "fake-runc"
    script.write_text(FAKE_RUNTIME.replace("PYTHON", sys.executable))
    script.chmod(0o755)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    process = {"args": ["true"], "env": ["PATH=/usr/bin:/bin", "HOME=/root"], "cwd": "/", "terminal": True}
    (bundle / "config.json").write_text(json.dumps({"ociVersion": "1.0.2", "process": process}))
    before = open_fds()
    yield OciRuntime("fake", str(script), str(tmp_path / "state")), bundle
    assert open_fds() <= before, "file descriptors leaked"
    assert leftovers(bundle) == []


async def exec_(fake: tuple[OciRuntime, Path], cmd: list[str], stdio: Stdio) -> int:
    runtime, bundle = fake
    return await asyncio.wait_for(run_exec(runtime, "cid", str(bundle), cmd, stdio), TIMEOUT)


async def test_stdout_and_stderr_apart(fake: tuple[OciRuntime, Path]) -> None:
    out, err = Collect(), Collect()
    code = await exec_(fake, ["sh", "-c", "echo out; echo err >&2; echo more; exit 3"], Stdio(stdout=out, stderr=err))
    assert code == 3
    assert out.data == b"out\nmore\n" and err.data == b"err\n"
    assert out.closed and err.closed


async def test_the_process_spec(fake: tuple[OciRuntime, Path]) -> None:
    out = Collect()
    assert await exec_(fake, ["sh", "-c", 'echo "$HOME $TERM"'], Stdio(stdout=out)) == 0
    assert out.data == b"/root \n"  # the container's env; terminal false even though the container has one


async def test_stdin_to_its_end(fake: tuple[OciRuntime, Path]) -> None:
    out = Collect()
    stdin = Feed(b"hello ", b"world", end=True)
    assert await exec_(fake, ["cat"], Stdio(stdin=stdin, stdout=out)) == 0
    assert out.data == b"hello world"


async def test_no_stdin_is_dev_null(fake: tuple[OciRuntime, Path]) -> None:
    out = Collect()
    assert await exec_(fake, ["sh", "-c", "cat; echo end"], Stdio(stdout=out)) == 0
    assert out.data == b"end\n"


async def test_input_nobody_reads(fake: tuple[OciRuntime, Path]) -> None:
    stdin = Feed(b"x" * 300_000)  # more than a pipe holds, and never ended
    assert await exec_(fake, ["sh", "-c", "exec 0<&-; sleep 0.1; echo done"], Stdio(stdin=stdin, stdout=Collect())) == 0


@pytest.mark.parametrize(("script", "code"), [("true", 0), ("false", 1), ("kill -9 $$", 137), ("kill -TERM $$", 143)])
async def test_exit_codes(fake: tuple[OciRuntime, Path], script: str, code: int) -> None:
    assert await exec_(fake, ["sh", "-c", script], Stdio(stdout=Collect(), stderr=Collect())) == code


async def test_unwanted_streams_are_drained(fake: tuple[OciRuntime, Path]) -> None:
    err = Collect()
    script = "head -c 1000000 /dev/zero; head -c 1000000 /dev/zero >&2; echo done >&2"
    assert await exec_(fake, ["sh", "-c", script], Stdio(stdout=None, stderr=err)) == 0
    assert err.data.endswith(b"done\n") and len(err.data) == 1_000_005


async def test_flood_through_a_slow_client_stays_bounded(fake: tuple[OciRuntime, Path]) -> None:
    out = Collect(delay=0.0005, keep=False)
    tracemalloc.start()
    try:
        code = await exec_(fake, ["head", "-c", "30000000", "/dev/zero"], Stdio(stdout=out))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0 and out.size == 30_000_000
    assert out.biggest <= exec_session.CHUNK
    assert peak < 2 * 1024 * 1024, f"peak {peak} bytes while streaming 30 MB"


async def test_a_stalled_client_stalls_the_command(fake: tuple[OciRuntime, Path]) -> None:
    runtime, bundle = fake
    out = Collect()
    out.stall.clear()
    progress = bundle / "progress"
    script = f'i=0; while [ $i -lt 5000 ]; do i=$((i+1)); echo $i > {progress}; printf "%01000d\\n" 0; done'
    task = asyncio.ensure_future(run_exec(runtime, "cid", str(bundle), ["sh", "-c", script], Stdio(stdout=out)))
    pid = await pid_of_exec(bundle)
    await asyncio.sleep(1.0)
    lines = int(progress.read_text() or 0)
    assert 0 < lines < 300, f"{lines} lines of 1 kB written past a client that reads nothing"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pid)


async def test_a_client_gone_kills_and_reaps(fake: tuple[OciRuntime, Path]) -> None:
    out = Collect(fail_after=3)
    with pytest.raises(ConnectionResetError):
        await exec_(fake, ["sh", "-c", "echo $$; exec yes"], Stdio(stdout=out, stderr=Collect()))
    pid = int(out.data.split(b"\n")[0])
    assert gone(pid)


async def test_a_client_gone_while_waiting_on_stdin(fake: tuple[OciRuntime, Path]) -> None:
    runtime, bundle = fake

    class Vanishing(Feed):
        async def read(self) -> bytes:
            await asyncio.sleep(0.2)
            raise ConnectionResetError("stdin stream reset")

    task = asyncio.ensure_future(
        run_exec(runtime, "cid", str(bundle), ["sleep", "30"], Stdio(stdin=Vanishing(), stdout=Collect()))
    )
    pid = await pid_of_exec(bundle)
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, TIMEOUT)
    assert gone(pid)


async def test_a_missing_runtime(tmp_path: Path) -> None:
    bundle = tmp_path
    (bundle / "config.json").write_text(json.dumps({"process": {"args": ["x"], "cwd": "/"}}))
    runtime = OciRuntime("nope", str(tmp_path / "no-such-runtime"), str(tmp_path / "state"))
    with pytest.raises(Exception, match="cannot run the OCI runtime"):
        await run_exec(runtime, "cid", str(bundle), ["true"], Stdio(stdout=Collect()))
    assert leftovers(bundle) == []


# --- tty, with the fake runtime playing runc's part ---------------------------------------------------


async def test_tty_size_and_name(fake: tuple[OciRuntime, Path]) -> None:
    out = Collect()
    stdio = Stdio(stdout=out, tty=True, resize=sizes(TerminalSize(width=101, height=33)))
    assert await exec_(fake, ["sh", "-c", 'stty size; tty; echo "$TERM"'], stdio) == 0
    lines = lines_of(out.data)
    assert lines[0] == "33 101" and lines[1].startswith("/dev/pts/") and lines[2] == "xterm"
    assert out.closed


async def tty_resize_later(runtime: OciRuntime, cid: str, bundle: Path) -> None:
    out = Collect()
    stdin = Feed()
    second = asyncio.Event()
    applied = asyncio.Event()

    async def resizes() -> AsyncIterator[TerminalSize]:
        yield TerminalSize(width=80, height=24)
        await second.wait()
        yield TerminalSize(width=120, height=50)
        applied.set()  # asked for the next one: the one before is applied
        await asyncio.Event().wait()

    stdio = Stdio(stdin=stdin, stdout=out, tty=True, resize=resizes())
    cmd = ["sh", "-c", "stty size; read line; sleep 0.2; stty size"]
    task = asyncio.ensure_future(run_exec(runtime, cid, str(bundle), cmd, stdio))
    await asyncio.wait_for(out.wait_for(b"24 80\r"), TIMEOUT)
    second.set()
    await applied.wait()
    stdin.put(b"go\r")
    assert await asyncio.wait_for(task, TIMEOUT) == 0
    assert lines_of(out.data)[-2:] == ["50 120", ""]


async def test_tty_resize_later(fake: tuple[OciRuntime, Path]) -> None:
    await tty_resize_later(fake[0], "cid", fake[1])


async def tty_stdin_eof(runtime: OciRuntime, cid: str, bundle: Path) -> None:
    out = Collect()
    stdio = Stdio(stdin=Feed(b"hello\r", end=True), stdout=out, tty=True)
    code = await asyncio.wait_for(run_exec(runtime, cid, str(bundle), ["sh", "-c", "cat; exit 4"], stdio), TIMEOUT)
    assert code == 4  # the ^D ended cat
    assert lines_of(out.data) == ["hello", "hello", ""]  # the terminal's echo, then cat's


async def test_tty_stdin_eof_is_ctrl_d(fake: tuple[OciRuntime, Path]) -> None:
    await tty_stdin_eof(fake[0], "cid", fake[1])


async def client_gone(runtime: OciRuntime, cid: str, bundle: Path, stdio: Callable[[Collect], Stdio]) -> None:
    """``yes`` whose client (``stdio`` around its output stream) stops reading, then goes away."""
    out = Collect()
    out.stall.clear()
    task = asyncio.ensure_future(run_exec(runtime, cid, str(bundle), ["yes"], stdio(out)))
    pid = await pid_of_exec(bundle)
    out.fail_after = 0
    out.stall.set()
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, TIMEOUT)
    assert gone(pid)


async def test_tty_client_gone(fake: tuple[OciRuntime, Path]) -> None:
    await client_gone(fake[0], "cid", fake[1], lambda out: Stdio(stdin=Feed(), stdout=out, tty=True))


async def test_tty_cancelled(fake: tuple[OciRuntime, Path]) -> None:
    runtime, bundle = fake
    stdio = Stdio(stdin=Feed(), stdout=Collect(), tty=True, resize=sizes(TerminalSize(80, 24)))
    task = asyncio.ensure_future(run_exec(runtime, "cid", str(bundle), ["sleep", "30"], stdio))
    pid = await pid_of_exec(bundle)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gone(pid)


# --- real runc on a busybox container (root only) ------------------------------------------------------

APPLETS = ("sh", "cat", "echo", "stty", "tty", "sleep", "yes", "head", "kill", "true", "false", "id", "ls", "read")


@pytest.fixture
def container(tmp_path: Path) -> Iterator[tuple[OciRuntime, str, Path]]:
    if os.geteuid() != 0:
        pytest.skip("runc needs root")
    if shutil.which("runc") is None or not os.path.exists("/bin/busybox"):
        pytest.skip("needs runc and /bin/busybox (busybox-static)")
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    cid = f"crid-exec-test-{uuid.uuid4().hex[:8]}"
    spec["process"].update(args=["sleep", "3600"], terminal=False)
    spec["root"]["readonly"] = False
    spec["linux"]["cgroupsPath"] = f"/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))
    runtime = OciRuntime("runc", shutil.which("runc") or "runc", str(tmp_path / "state"))
    run = ["runc", "--root", runtime.root, "run", "-d", "--bundle", str(bundle), cid]
    subprocess.run(run, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=60)
    before = open_fds()
    try:
        yield runtime, cid, bundle
        assert open_fds() <= before, "file descriptors leaked"
        assert leftovers(bundle) == []
    finally:
        subprocess.run(["runc", "--root", runtime.root, "delete", "-f", cid], capture_output=True, timeout=60)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(f"/sys/fs/cgroup/{cid}")


async def runc_exec(container: tuple[OciRuntime, str, Path], cmd: list[str], stdio: Stdio) -> int:
    runtime, cid, bundle = container
    return await asyncio.wait_for(run_exec(runtime, cid, str(bundle), cmd, stdio), TIMEOUT)


async def test_runc_pipes(container: tuple[OciRuntime, str, Path]) -> None:
    out, err = Collect(), Collect()
    stdio = Stdio(stdin=Feed(b"from the client\n", end=True), stdout=out, stderr=err)
    assert await runc_exec(container, ["sh", "-c", "cat; echo err >&2; tty; exit 7"], stdio) == 7
    assert out.data == b"from the client\nnot a tty\n" and err.data == b"err\n"
    assert out.closed and err.closed


@pytest.mark.parametrize(("script", "code"), [("true", 0), ("false", 1), ("kill -9 $$", 137)])
async def test_runc_exit_codes(container: tuple[OciRuntime, str, Path], script: str, code: int) -> None:
    assert await runc_exec(container, ["sh", "-c", script], Stdio(stdout=Collect(), stderr=Collect())) == code


async def test_runc_tty(container: tuple[OciRuntime, str, Path]) -> None:
    out = Collect()
    stdio = Stdio(stdout=out, tty=True, resize=sizes(TerminalSize(width=97, height=31)))
    assert await runc_exec(container, ["sh", "-c", "stty size; tty; exit 3"], stdio) == 3
    lines = lines_of(out.data)
    assert lines[0] == "31 97" and lines[1].startswith("/dev/pts/"), out.data


async def test_runc_tty_resize_later(container: tuple[OciRuntime, str, Path]) -> None:
    await tty_resize_later(*container)


async def test_runc_tty_stdin_eof(container: tuple[OciRuntime, str, Path]) -> None:
    await tty_stdin_eof(*container)


async def test_runc_client_gone(container: tuple[OciRuntime, str, Path]) -> None:
    await client_gone(*container, lambda out: Stdio(stdout=out, stderr=Collect()))


async def test_runc_tty_client_gone(container: tuple[OciRuntime, str, Path]) -> None:
    await client_gone(*container, lambda out: Stdio(stdin=Feed(), stdout=out, tty=True))
