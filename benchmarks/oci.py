"""The raw floor: a busybox bundle run directly by an OCI runtime, no CRI daemon.

The bundle's rootfs is Debian's static /bin/busybox with /bin/true as a hard
link to it; its config.json is ``runc spec`` with a read-only rootfs, no
terminal and ``/bin/true`` as the process.
"""

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks import commands

BUSYBOX = "/bin/busybox"  # Debian's busybox-static
RUNC = "/usr/sbin/runc"
CRUN = "/usr/bin/crun"
BINARIES = {"runc": RUNC, "crun": CRUN}


def make_bundle(path: Path, args: tuple[str, ...] = ("/bin/true",)) -> Path:
    """Write a bundle at ``path`` (created) and return it."""
    rootfs = path / "rootfs"
    (rootfs / "bin").mkdir(parents=True, exist_ok=True)
    busybox = rootfs / "bin" / "busybox"
    if not busybox.exists():
        shutil.copy2(BUSYBOX, busybox)
    true = rootfs / "bin" / "true"
    if not true.exists():
        os.link(busybox, true)
    config = path / "config.json"
    config.unlink(missing_ok=True)
    subprocess.run([RUNC, "spec", "--bundle", str(path)], check=True, capture_output=True)
    spec = json.loads(config.read_text())
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["root"]["readonly"] = True
    config.write_text(json.dumps(spec, indent=2) + "\n")
    return path


def run_once(binary: str, root: Path, bundle: Path, cid: str, timeout: float = 30.0) -> None:
    """``BINARY --root ROOT run -b BUNDLE ID`` in the foreground; raises RuntimeError on failure
    (after deleting whatever the failed run left)."""
    done = commands.run(
        [binary, "--root", str(root), "run", "--bundle", str(bundle), cid],
        timeout,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    if done.returncode != 0:
        subprocess.run([binary, "--root", str(root), "delete", "--force", cid], capture_output=True)
        message = done.stderr.decode(errors="replace").strip() or f"exit code {done.returncode}"
        raise RuntimeError(f"{os.path.basename(binary)} run failed: {message}")


def _create_and_start(base: list[str], bundle: Path, cid: str, timeout: float) -> None:
    """``create`` then ``start`` as two commands, as a CRI runtime starts a container (its monitor
    runs ``create``, StartContainer ``start``). Its stdio is /dev/null and a file: the container
    keeps what ``create`` is given, so a pipe would never reach its end."""
    null = subprocess.DEVNULL
    with tempfile.TemporaryFile() as err:
        for args in (["create", "--bundle", str(bundle), cid], ["start", cid]):
            done = commands.run([*base, *args], timeout, stdin=null, stdout=null, stderr=err)
            if done.returncode != 0:
                err.seek(0)
                message = err.read().decode(errors="replace").strip() or f"exit code {done.returncode}"
                raise RuntimeError(f"{os.path.basename(base[0])} {args[0]} failed: {message}")


def create_start_once(binary: str, root: Path, bundle: Path, cid: str, timeout: float = 30.0) -> float:
    """The seconds of ``create`` + ``start`` (see ``_create_and_start``). The container is deleted
    afterwards, untimed."""
    base = [binary, "--root", str(root)]
    try:
        t0 = time.perf_counter()
        _create_and_start(base, bundle, cid, timeout)
        return time.perf_counter() - t0
    finally:
        subprocess.run([*base, "delete", "--force", cid], capture_output=True, timeout=timeout)


def kill_delete_once(binary: str, root: Path, bundle: Path, cid: str, timeout: float = 30.0) -> float:
    """A running container of ``bundle`` (its process must keep running) stopped as a CRI runtime
    stops one: ``kill`` (SIGKILL), its exit, ``delete``; their seconds. It is created and started
    first, untimed. The exit is seen on a pidfd: the process is not this one's child."""
    base = [binary, "--root", str(root)]
    null = subprocess.DEVNULL
    try:
        _create_and_start(base, bundle, cid, timeout)
        state = subprocess.run([*base, "state", cid], capture_output=True, check=True, timeout=timeout)
        pidfd = os.pidfd_open(int(json.loads(state.stdout)["pid"]))
        try:
            t0 = time.perf_counter()
            commands.run([*base, "kill", cid, "KILL"], timeout, stdin=null, stdout=null, check=True)
            if not select.select([pidfd], [], [], timeout)[0]:
                raise RuntimeError(f"{os.path.basename(binary)}: {cid} did not exit {timeout:g}s after SIGKILL")
            commands.run([*base, "delete", cid], timeout, stdin=null, stdout=null, check=True)
            return time.perf_counter() - t0
        finally:
            os.close(pidfd)
    finally:
        subprocess.run([*base, "delete", "--force", cid], capture_output=True, timeout=timeout)


def exec_samples(binary: str, root: Path, bundle: Path, cid: str, count: int, timeout: float = 30.0) -> list[float]:
    """``exec CID /bin/true`` ``count`` times into a container of ``bundle`` (its process must
    keep running), as a CRI runtime runs an exec probe; the seconds of each. The container is
    created, started and deleted around them, untimed."""
    base = [binary, "--root", str(root)]
    null = subprocess.DEVNULL
    try:
        _create_and_start(base, bundle, cid, timeout)
        samples = []
        for _ in range(count):
            t0 = time.perf_counter()
            commands.run([*base, "exec", cid, "/bin/true"], timeout, stdin=null, stdout=null, check=True)
            samples.append(time.perf_counter() - t0)
        return samples
    finally:
        subprocess.run([*base, "delete", "--force", cid], capture_output=True, timeout=timeout)


def version(binary: str) -> str:
    """The first line of ``BINARY --version``, or why there is none."""
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else f"unknown (exit {out.returncode})"
