"""Attach: a fake conmon (its SOCK_SEQPACKET attach socket and ctl fifo), then real conmon and runc (root only)."""

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cri.errors import FailedPrecondition
from cri.runtime import attach as attach_mod
from cri.runtime import monitor
from cri.runtime.attach import attach
from cri.runtime.oci import OciRuntime
from cri.runtime.stdio import Stdio, TerminalSize
from tests.support.stdio_fakes import Collect, Feed, sizes

TIMEOUT = 10.0


class FakeConmon:
    """conmon's side: the attach socket in the bundle (reached through a symlink, as
    conmon makes it) and the ctl fifo, read as conmon does."""

    def __init__(self, root: Path, cid: str = "c1") -> None:
        self.bundle = root / "bundle"
        self.bundle.mkdir(parents=True)
        (root / "attach").mkdir()
        (root / "attach" / cid).symlink_to(self.bundle)
        self.socket_path = str(root / "attach" / cid / "attach")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dirfd = os.open(self.bundle, os.O_PATH)  # as conmon binds it: the path may be too long
        try:
            self.listener.bind(f"/proc/self/fd/{dirfd}/attach")
        finally:
            os.close(dirfd)
        self.listener.listen(1)
        self.listener.setblocking(False)
        os.mkfifo(self.bundle / "ctl")
        self.ctl = os.open(self.bundle / "ctl", os.O_RDONLY | os.O_NONBLOCK)
        self.conn: socket.socket | None = None

    async def accept(self) -> socket.socket:
        self.conn, _ = await asyncio.get_running_loop().sock_accept(self.listener)
        return self.conn

    async def send(self, pipe: int, data: bytes) -> None:
        assert self.conn is not None
        await asyncio.get_running_loop().sock_sendall(self.conn, bytes([pipe]) + data)

    async def packets(self) -> list[bytes]:
        """What the client sent, up to its end (its SHUT_WR)."""
        assert self.conn is not None
        got = []
        while packet := await asyncio.get_running_loop().sock_recv(self.conn, 65536):
            got.append(packet)
        return got

    def ctl_lines(self) -> str:
        try:
            return os.read(self.ctl, 4096).decode()
        except BlockingIOError:
            return ""

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.listener.close()
        os.close(self.ctl)


@pytest.fixture
def conmon(tmp_path: Path) -> Iterator[FakeConmon]:
    fake = FakeConmon(tmp_path)
    yield fake
    fake.close()


async def test_output_by_pipe(conmon: FakeConmon) -> None:
    out, err = Collect(), Collect()
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, Stdio(stdout=out, stderr=err), False))
    await conmon.accept()
    await conmon.send(2, b"out 1\n")
    await conmon.send(3, b"err 1\n")
    await conmon.send(2, b"out 2\n")
    await conmon.send(7, b"not a pipe\n")
    await asyncio.wait_for(out.wait_for(b"out 2\n"), TIMEOUT)
    assert not task.done()
    assert conmon.conn is not None
    conmon.conn.close()  # the container exited
    await asyncio.wait_for(task, TIMEOUT)
    assert out.data == b"out 1\nout 2\n" and err.data == b"err 1\n"
    assert out.closed and err.closed


async def test_stderr_not_wanted(conmon: FakeConmon) -> None:
    out = Collect()
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, Stdio(stdout=out), False))
    conn = await conmon.accept()
    await conmon.send(3, b"dropped")
    await conmon.send(2, b"kept")
    conn.shutdown(socket.SHUT_RDWR)
    await asyncio.wait_for(task, TIMEOUT)
    assert out.data == b"kept" and out.closed


async def test_stdin_as_is_then_half_close(conmon: FakeConmon) -> None:
    big = bytes(range(256)) * 400  # 100 kB: more than one packet
    stdin = Feed(b"hello\n", big, end=True)
    out = Collect()
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, Stdio(stdin=stdin, stdout=out), True))
    await conmon.accept()
    packets = await asyncio.wait_for(conmon.packets(), TIMEOUT)  # ends: the client shut its side down
    assert b"".join(packets) == b"hello\n" + big
    assert max(len(p) for p in packets) <= attach_mod.SEND_SIZE
    await conmon.send(2, b"still attached\n")  # the output goes on after stdin ended
    await asyncio.wait_for(out.wait_for(b"still attached\n"), TIMEOUT)
    assert not task.done()
    assert conmon.conn is not None
    conmon.conn.close()
    await asyncio.wait_for(task, TIMEOUT)


async def test_stdin_ignored_when_the_container_has_none(conmon: FakeConmon) -> None:
    stdin = Feed(b"nobody reads this", end=True)
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, Stdio(stdin=stdin), False))
    conn = await conmon.accept()
    conn.setblocking(True)
    conn.settimeout(0.3)
    with pytest.raises(TimeoutError):  # neither data nor a half-close (that would close the container's stdin)
        await asyncio.to_thread(conn.recv, 100)
    conn.close()
    await asyncio.wait_for(task, TIMEOUT)


async def test_resize_to_ctl(conmon: FakeConmon) -> None:
    stdio = Stdio(stdout=Collect(), tty=True, resize=sizes(TerminalSize(width=80, height=24), TerminalSize(120, 50)))
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, stdio, False))
    conn = await conmon.accept()
    lines = ""
    for _ in range(100):
        lines += conmon.ctl_lines()
        if lines.count("\n") == 2:
            break
        await asyncio.sleep(0.02)
    assert lines == "1 24 80\n1 50 120\n"  # conmon's "<type> <height> <width>"
    conn.close()
    await asyncio.wait_for(task, TIMEOUT)


async def test_resize_without_conmon(conmon: FakeConmon) -> None:
    os.close(conmon.ctl)  # no reader on the fifo: the resize is dropped, the attach goes on
    conmon.ctl = os.open(os.devnull, os.O_RDONLY)
    stdio = Stdio(stdout=Collect(), tty=True, resize=sizes(TerminalSize(80, 24)))
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, stdio, False))
    conn = await conmon.accept()
    await asyncio.sleep(0.1)
    assert not task.done()
    conn.close()
    await asyncio.wait_for(task, TIMEOUT)


async def test_a_long_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    fake = FakeConmon(deep)
    try:
        assert len(fake.socket_path) > attach_mod.SUN_PATH_MAX
        out = Collect()
        task = asyncio.ensure_future(attach(str(fake.bundle), fake.socket_path, Stdio(stdout=out), False))
        conn = await fake.accept()
        await fake.send(2, b"through /proc/self/fd")
        conn.close()
        await asyncio.wait_for(task, TIMEOUT)
        assert out.data == b"through /proc/self/fd"
    finally:
        fake.close()


async def test_no_monitor(tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="monitor is not listening"):
        await attach(str(tmp_path), str(tmp_path / "attach"), Stdio(stdout=Collect()), False)


async def test_client_gone(conmon: FakeConmon) -> None:
    out = Collect(fail_after=0)
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, Stdio(stdin=Feed(), stdout=out), True))
    conn = await conmon.accept()
    await conmon.send(2, b"x")
    with pytest.raises(ConnectionResetError):
        await asyncio.wait_for(task, TIMEOUT)
    conn.settimeout(TIMEOUT)
    assert conn.recv(10) == b""  # the client's connection to conmon is closed


async def test_a_stalled_client_stalls_conmon(conmon: FakeConmon) -> None:
    out = Collect()
    out.stall.clear()
    task = asyncio.ensure_future(attach(str(conmon.bundle), conmon.socket_path, Stdio(stdout=out), False))
    conn = await conmon.accept()
    sent = 0
    packet = b"\x02" + b"x" * 8192
    for _ in range(2000):  # 16 MB, if nothing pushed back
        try:
            conn.send(packet)
        except BlockingIOError:
            await asyncio.sleep(0.05)
            try:
                conn.send(packet)
            except BlockingIOError:
                break
        sent += len(packet)
        await asyncio.sleep(0)
    assert sent < 4 * 1024 * 1024, "the client read ahead of a stalled client"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- real conmon and runc (root only) --------------------------------------------------------------


@pytest.fixture
def real(tmp_path: Path) -> Iterator[tuple[OciRuntime, str, Path, Path]]:
    if os.geteuid() != 0:
        pytest.skip("conmon and runc need root")
    if not (shutil.which("runc") and os.path.exists(monitor.CONMON) and os.path.exists("/bin/busybox")):
        pytest.skip("needs runc, conmon and /bin/busybox")
    bundle = tmp_path / "bundle"
    rootfs = bundle / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "cat", "echo", "sleep", "stty", "read"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    subprocess.run(["runc", "spec", "--bundle", str(bundle)], check=True)
    cid = f"crid-attach-test-{uuid.uuid4().hex[:8]}"
    runtime = OciRuntime("runc", shutil.which("runc") or "runc", str(tmp_path / "runc"))
    yield runtime, cid, bundle, tmp_path
    subprocess.run(["runc", "--root", runtime.root, "delete", "-f", cid], capture_output=True, timeout=60)
    pid = monitor.conmon_pid(str(bundle))
    if pid and monitor.is_conmon(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(f"/sys/fs/cgroup/{cid}")


async def start_under_conmon(
    real: tuple[OciRuntime, str, Path, Path], args: list[str], tty: bool, stdin: bool
) -> tuple[str, Path]:
    runtime, cid, bundle, tmp = real
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(args=args, terminal=tty)
    spec["linux"]["cgroupsPath"] = f"/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))
    ms = monitor.MonitorSpec(
        container_id=cid,
        bundle=str(bundle),
        log_path=str(tmp / "log"),
        exit_dir=str(tmp / "exits"),
        persist_dir=str(tmp / "persist"),
        socket_dir=str(tmp / "attach"),
        tty=tty,
        stdin=stdin,
        stdin_once=True,
    )
    os.makedirs(ms.exit_dir)
    await monitor.create(runtime, ms)
    return os.path.join(ms.socket_dir, cid, "attach"), tmp / "exits" / cid


async def test_conmon_attach_pipes(real: tuple[OciRuntime, str, Path, Path]) -> None:
    runtime, cid, bundle, _ = real
    script = "read line; echo got $line; echo err >&2; cat; echo end"
    sock, exit_file = await start_under_conmon(real, ["sh", "-c", script], tty=False, stdin=True)
    out, err = Collect(), Collect()
    stdin = Feed()
    task = asyncio.ensure_future(attach(str(bundle), sock, Stdio(stdin=stdin, stdout=out, stderr=err), True))
    await asyncio.sleep(0.2)  # attached before the container starts: nothing is missed
    await runtime.run("start", cid)
    stdin.put(b"hello\n")
    await asyncio.wait_for(out.wait_for(b"got hello\n"), TIMEOUT)
    stdin.put(b"more\n")
    stdin.put(b"")  # stdin_once: conmon closes the container's stdin, cat ends
    await asyncio.wait_for(task, TIMEOUT)  # the container exited: conmon closed the socket
    assert out.data == b"got hello\nmore\nend\n" and err.data == b"err\n"
    assert out.closed and err.closed
    for _ in range(100):
        if exit_file.exists():
            break
        await asyncio.sleep(0.05)
    assert exit_file.read_text() == "0"


async def test_conmon_attach_tty_resize(real: tuple[OciRuntime, str, Path, Path]) -> None:
    runtime, cid, bundle, _ = real
    sock, _ = await start_under_conmon(real, ["sh", "-c", "read line; stty size"], tty=True, stdin=True)
    out = Collect()
    stdin = Feed()
    stdio = Stdio(stdin=stdin, stdout=out, tty=True, resize=sizes(TerminalSize(width=91, height=27)))
    task = asyncio.ensure_future(attach(str(bundle), sock, stdio, True))
    await runtime.run("start", cid)
    await asyncio.sleep(0.3)
    stdin.put(b"go\r")
    await asyncio.wait_for(task, TIMEOUT)
    assert out.data.endswith(b"27 91\r\n"), out.data
