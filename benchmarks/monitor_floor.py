"""The monitor's floor: conmon + the OCI runtime's ``create`` + ``start``, by hand, no daemon.

crid, like CRI-O, runs each container under a conmon of its own: conmon starts, daemonizes, runs
``<runtime> create`` and reports the container's pid on a sync pipe; StartContainer is then
``<runtime> start``. This floor is that sequence with crid's own conmon command line
(``cri.runtime.monitor.conmon_args``): what a runtime with a monitor per container cannot go below.
"""

import contextlib
import json
import os
import select
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from benchmarks import commands
from benchmarks.core import NotSupported, OciTarget, Params, oci_workload
from cri.runtime.monitor import MonitorSpec, conmon_args

TIMEOUT = 30.0


def conmon_create_start_once(binary: str, root: Path, bundle: Path, cid: str, scratch: Path) -> float:
    """The seconds from conmon's spawn to ``start``'s exit, as CreateContainer + StartContainer run
    them; everything is deleted afterwards, untimed. Raises RuntimeError with conmon's or the
    runtime's message."""
    state = scratch / f"conmon-{cid}"
    spec = MonitorSpec(
        container_id=cid,
        bundle=str(bundle),
        log_path="",
        exit_dir=str(state / "exits"),
        persist_dir=str(state / "persist"),
        socket_dir=str(state / "attach"),
    )
    for d in (root, state / "exits", state / "persist", state / "attach"):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    null = subprocess.DEVNULL
    try:
        t0 = time.perf_counter()
        done = commands.run(
            conmon_args(binary, str(root), spec),
            TIMEOUT,
            env={**os.environ, "_OCI_SYNCPIPE": str(write_fd)},
            pass_fds=(write_fd,),
            cwd=bundle,
            stdin=null,
            stdout=null,
            stderr=subprocess.PIPE,
        )
        os.close(write_fd)
        write_fd = -1
        if done.returncode != 0:
            raise RuntimeError(f"conmon failed: {done.stderr.decode(errors='replace').strip()}")
        doc = _read_sync(read_fd)
        pid = doc.get("data")
        if not isinstance(pid, int) or pid <= 0:
            raise RuntimeError(f"{os.path.basename(binary)} create under conmon failed: {doc.get('message') or doc}")
        commands.run([binary, "--root", str(root), "start", cid], TIMEOUT, stdin=null, stdout=null, check=True)
        return time.perf_counter() - t0
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
        _clean(binary, root, bundle, cid, state)


def _read_sync(fd: int) -> dict[str, object]:
    """conmon's first JSON line on the sync pipe (``{"data": pid}`` or an error)."""
    buf = b""
    deadline = time.monotonic() + TIMEOUT
    while b"\n" not in buf:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise RuntimeError(f"conmon reported nothing in {TIMEOUT:g}s")
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    doc = json.loads(buf.split(b"\n", 1)[0] or b"{}")
    return doc if isinstance(doc, dict) else {}


def _clean(binary: str, root: Path, bundle: Path, cid: str, state: Path) -> None:
    """Delete the container, wait for its conmon to go, remove what both left."""
    subprocess.run([binary, "--root", str(root), "delete", "--force", cid], capture_output=True, timeout=TIMEOUT)
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        pidfd = os.pidfd_open(int((bundle / "conmon.pid").read_text().strip()))
        try:
            select.select([pidfd], [], [], TIMEOUT)
        finally:
            os.close(pidfd)
    for name in ("pidfile", "conmon.pid", "oom", "ctl", "winsz"):  # conmon drops its fifos in the bundle
        (bundle / name).unlink(missing_ok=True)
    shutil.rmtree(state, ignore_errors=True)


@oci_workload(
    "floor_conmon_create_start", "floor: conmon + `{target} create` + `{target} start` of busybox /bin/true", count=40
)
def floor_conmon_create_start(t: OciTarget, p: Params) -> list[float]:
    samples: list[float] = []
    for i in range(p.count):
        cid = f"floor-mon-{p.round}-{i}-{uuid.uuid4().hex[:8]}"
        try:
            samples.append(conmon_create_start_once(t.binary, t.root, t.bundle, cid, p.workdir))
        except RuntimeError as exc:
            if not samples and p.round == 0:  # it never ran here: crun 1.8 on hybrid cgroups
                raise NotSupported(str(exc)) from exc
            raise
    return samples
