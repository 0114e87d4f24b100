"""CheckpointContainer: a running container's processes dumped by CRIU (through
``runc checkpoint``) and its writable layer, written as one tar archive in the
layout CRI-O and containerd write and checkpointctl reads:

    config.dump        which container, image and runtime (checkpointctl's ContainerConfig)
    spec.dump          the container's OCI spec (config.json as crid wrote it)
    checkpoint/        CRIU's images
    rootfs-diff.tar    what the container added or changed: its overlay upper dir, whiteouts left out
    deleted.files      JSON list of the paths the container deleted (the upper dir's whiteouts)
    dump.log, stats-dump   CRIU's log and timings
    container.log      the container's log (containerd's name for it)

The container keeps running (kubelet's forensic checkpointing). It is paused
meanwhile, as CRI-O does, so the files match the memory. Whether CRIU works is
probed once at startup (``criu check``); where it does not, the RPC says why.
"""

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

from cri.errors import CridError, DeadlineExceeded, FailedPrecondition, InvalidArgument, ResourceExhausted, quote
from cri.log import fields
from cri.runtime.container_store import Container, State

if TYPE_CHECKING:
    import tarfile

    from cri.runtime.containers import Containers
    from cri.runtime.oci import Runtime

log = logging.getLogger(__name__)

CRIU = "criu"  # looked up in PATH, as runc does (its --criu default)
CHECK_TIMEOUT = 30.0  # `criu check` at startup
DEFAULT_TIMEOUT = 300  # seconds, when the request says 0 ("the CRI default")

CONFIG_DUMP, SPEC_DUMP, IMAGES_DIR = "config.dump", "spec.dump", "checkpoint"
ROOTFS_DIFF, DELETED_FILES, DUMP_LOG, STATS_DUMP = "rootfs-diff.tar", "deleted.files", "dump.log", "stats-dump"
CONTAINER_LOG = "container.log"  # the container's CRI log so far, named as containerd names it
STAGING_PREFIX = "checkpoint-"  # the staging dirs in a container's persist dir
PARTIAL = "partial"  # in a staging dir: the path of the archive being written
# overlayfs marks a directory that hides the lower layers' one with this xattr ("y");
# the user. one when mounted with userxattr
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")
# Go's zero time.Time, which checkpointctl's restoredTime holds when never restored
ZERO_TIME = "0001-01-01T00:00:00Z"


@dataclass(frozen=True)
class CriuSupport:
    """The outcome of the startup probe: whether checkpointing can work here, and if not why."""

    supported: bool
    reason: str = ""  # criu's own words (first line of its output), or that it is missing

    def describe(self) -> dict[str, object]:
        """For Status(verbose) info."""
        return {"supported": self.supported, "reason": self.reason, "probe": f"{CRIU} check"}


UNPROBED = CriuSupport(False, "criu has not been probed yet")
CriuProbe = Callable[[], Awaitable[CriuSupport]]  # tests pass a fake


async def probe_criu(binary: str = CRIU, time_limit: float = CHECK_TIMEOUT) -> CriuSupport:
    """Run ``criu check``: it fails where the kernel lacks what CRIU needs, or
    (criu 3.17 on Linux 6.18) where CRIU cannot parse the kernel's vDSO."""
    path = shutil.which(binary)
    if path is None:
        return CriuSupport(False, f"criu is not installed ({binary!r} is not in PATH)")
    try:
        proc = await asyncio.create_subprocess_exec(
            path, "check", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    except OSError as exc:
        return CriuSupport(False, f"criu check could not run: {exc.strerror}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), time_limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return CriuSupport(False, f"criu check did not finish within {time_limit:g}s")
    if proc.returncode == 0:
        return CriuSupport(True)
    lines = [line.strip() for line in out.decode(errors="replace").splitlines() if line.strip()]
    return CriuSupport(False, f"criu check failed: {lines[0] if lines else f'exit {proc.returncode}'}")


# --- the request -----------------------------------------------------------------------------


def check_request(location: str, timeout: int) -> int:
    """The location's checks (an absolute path of a file in an existing directory);
    returns the time limit in seconds."""
    if not location:
        raise InvalidArgument("CheckpointContainer: location is empty (the path of the archive to write)")
    if not os.path.isabs(location):
        raise InvalidArgument(f"CheckpointContainer: location {quote(location)} is not an absolute path")
    if location.endswith("/") or os.path.isdir(location):
        raise InvalidArgument(f"CheckpointContainer: location {quote(location)} is a directory, not a file path")
    if not os.path.isdir(os.path.dirname(location)):
        raise FailedPrecondition(f"CheckpointContainer: the directory of location {quote(location)} does not exist")
    if timeout < 0:
        raise InvalidArgument(f"CheckpointContainer: timeout {timeout} is negative")
    return timeout or DEFAULT_TIMEOUT


# --- the writable layer ----------------------------------------------------------------------


@dataclass
class RootfsDiff:
    """What a container changed, from its overlay upper dir."""

    files: list[str] = field(default_factory=list)  # upper dir entries for rootfs-diff.tar, relative, parents first
    deleted: list[str] = field(default_factory=list)  # container paths ("/etc/motd") for deleted.files


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0  # overlayfs' whiteout: a 0/0 character device


def _is_opaque(path: str) -> bool:
    for name in OPAQUE_XATTRS:
        with contextlib.suppress(OSError):
            if os.getxattr(path, name, follow_symlinks=False) == b"y":
                return True
    return False


def rootfs_diff(upper: str, lowers: Sequence[str] = (), skip: Collection[str] = ()) -> RootfsDiff:
    """Walk the upper dir: whiteouts become deletions, everything else goes to the diff.

    An opaque directory hides the lower layers' entries of that directory: each
    of those the upper dir does not have again is a deletion (restore applies
    the diff first, then deletes; deleting the directory itself would delete
    the container's new files in it too). ``skip``: container paths not to
    record, with what is under them (mount points: runc makes them in the upper
    dir, and their content is not the container's layer)."""
    diff = RootfsDiff()
    skipped = {p.rstrip("/") or "/" for p in skip}

    def walk(rel: str) -> None:
        here = os.path.join(upper, rel)
        for name in sorted(os.listdir(here)):
            child = os.path.join(rel, name)
            if "/" + child in skipped:
                continue
            st = os.lstat(os.path.join(upper, child))
            if _is_whiteout(st):
                diff.deleted.append("/" + child)
                continue
            diff.files.append(child)
            if stat.S_ISDIR(st.st_mode):
                if _is_opaque(os.path.join(upper, child)):
                    diff.deleted.extend(_hidden(child, lowers, upper))
                walk(child)

    walk("")
    return diff


def _hidden(rel: str, lowers: Sequence[str], upper: str) -> list[str]:
    """The lower layers' entries of an opaque directory that the upper dir does not have."""
    names: set[str] = set()
    for lower in lowers:
        with contextlib.suppress(OSError):
            names.update(os.listdir(os.path.join(lower, rel)))
    present = set(os.listdir(os.path.join(upper, rel)))
    return [f"/{rel}/{n}" for n in sorted(names - present)]


# --- the archive -----------------------------------------------------------------------------


class _Deadline:
    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def left(self) -> float:
        return self.at - time.monotonic()

    def check(self) -> None:
        if self.left() <= 0:
            raise DeadlineExceeded(f"CheckpointContainer did not finish within {self.seconds}s (the request's timeout)")


def _numeric(info: "tarfile.TarInfo") -> "tarfile.TarInfo":
    info.uname = info.gname = ""  # the container's ids, not the host's names for them
    return info


def _go_time(ns: int) -> str:
    """A time as Go's time.Time marshals to JSON (RFC 3339, nanoseconds)."""
    if ns <= 0:
        return ZERO_TIME
    seconds, frac = divmod(ns, 1_000_000_000)
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{frac:09d}".rstrip("0").rstrip(".") + "Z"


def config_dump(c: Container, now_ns: int) -> dict[str, object]:
    """checkpointctl's ContainerConfig (config.dump), as containerd fills it."""
    return {
        "id": c.id,
        "name": c.name,
        "rootfsImage": c.config.image.image,
        "rootfsImageRef": c.image_ref,
        "rootfsImageName": c.image_name,
        "runtime": c.handler,
        "createdTime": _go_time(c.created_at),
        "checkpointedTime": _go_time(now_ns),
        "restoredTime": ZERO_TIME,
        "restored": False,
    }


def write_rootfs_diff(upper: str, diff: RootfsDiff, out: IO[bytes], deadline: _Deadline | None = None) -> None:
    import tarfile  # here: an idle daemon does not keep tarfile (the checkpoint's two archives need it)

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in diff.files:
            if deadline is not None:
                deadline.check()
            tar.add(os.path.join(upper, rel), arcname=rel, recursive=False, filter=_numeric)


def write_archive(
    staging: str,
    c: Container,
    spec: dict[str, Any],
    diff: RootfsDiff,
    out: IO[bytes],
    deadline: _Deadline | None = None,
) -> None:
    """The archive: the metadata, ``staging``'s CRIU images, logs and rootfs-diff.tar, the container's log."""
    now = time.time_ns()
    docs: dict[str, object] = {CONFIG_DUMP: config_dump(c, now), SPEC_DUMP: spec}
    if diff.deleted:
        docs[DELETED_FILES] = diff.deleted
    for name, doc in docs.items():
        with open(os.path.join(staging, name), "w") as f:
            json.dump(doc, f, indent=2)
    import tarfile

    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in (CONFIG_DUMP, SPEC_DUMP, IMAGES_DIR, ROOTFS_DIFF, DELETED_FILES, DUMP_LOG, STATS_DUMP):
            path = os.path.join(staging, name)
            if not os.path.lexists(path):
                continue
            tar.add(path, arcname=name, recursive=False, filter=_numeric)
            if name == IMAGES_DIR:
                for image in sorted(os.listdir(path)):
                    if deadline is not None:
                        deadline.check()
                    tar.add(os.path.join(path, image), arcname=f"{name}/{image}", filter=_numeric)
        if c.log_path and os.path.isfile(c.log_path):
            tar.add(c.log_path, arcname=CONTAINER_LOG, filter=_numeric)


def _criu_error(work: str) -> str:
    """CRIU's first error in dump.log, the cause (the later ones follow from it): runc's
    own message only points at the log, which goes with the staging dir."""
    with contextlib.suppress(OSError), open(os.path.join(work, DUMP_LOG), errors="replace") as f:
        for line in f:
            at = line.find("Error (")
            if at >= 0:
                return line[at:].strip()  # without the "(00.037583) " timestamp
    return ""


@dataclass(frozen=True)
class Target:
    """The container to checkpoint and where its files are."""

    container: Container
    bundle: str  # config.json
    persist: str  # the upper dir's parent; the staging dir is made there
    lowers: list[str]  # image layers, top first

    @property
    def upper(self) -> str:
        return os.path.join(self.persist, "upper")


def _skip_paths(spec: dict[str, Any]) -> list[str]:
    mounts = spec.get("mounts", [])
    return [m["destination"] for m in mounts if isinstance(m, dict) and isinstance(m.get("destination"), str)]


def _running(containers: "Containers", cid: str) -> Container:
    c = containers.get(cid)
    if c.state != State.RUNNING:
        raise FailedPrecondition(
            f"container {c.id} is {c.state.value}, not running: only a running one is checkpointed"
        )
    return c


async def checkpoint(containers: "Containers", cid: str, location: str, timeout: int) -> None:  # noqa: ASYNC109
    """CheckpointContainer: the request checked, then the archive written."""
    c = _running(containers, cid)
    seconds = check_request(location, timeout)
    async with containers.life.locks.hold(c.id):  # one at a time: each pauses and resumes it
        c = _running(containers, c.id)  # it may have exited meanwhile
        lowers = containers.images.layer_dirs(c.chain_ids)
        target = Target(c, containers.bundle(c.id), containers.persist(c.id), lowers)
        runtime, criu = containers.handlers.runtime(c.handler), containers.handlers.criu
        await export(runtime, criu, target, location, seconds)


async def export(runtime: "Runtime", criu: CriuSupport, target: Target, location: str, seconds: int) -> None:
    """Checkpoint ``target`` into the archive ``location`` (written whole or not at all)."""
    c = target.container
    if not criu.supported:
        raise FailedPrecondition(f"checkpointing container {c.id} is not supported on this node: {criu.reason}")
    deadline = _Deadline(seconds)
    spec = await asyncio.to_thread(_read_spec, os.path.join(target.bundle, "config.json"))
    staging = await asyncio.to_thread(tempfile.mkdtemp, prefix=STAGING_PREFIX, dir=target.persist)
    directory, base = os.path.split(location)
    partial = ""
    try:
        fd, partial = _partial(directory, base, location)
        with os.fdopen(fd, "wb") as out:
            _write_text(os.path.join(staging, PARTIAL), partial)  # for recovery, should crid die meanwhile
            await runtime.pause(c.id)
            try:  # paused, the layer's files are those of the dumped memory
                await _dump(runtime, c.id, staging, deadline)
                diff = await asyncio.to_thread(_write_diff, staging, target, _skip_paths(spec), deadline, location)
            finally:
                await _resume(runtime, c.id)
            await asyncio.to_thread(_write_archive, staging, c, spec, diff, out, deadline, location)
        os.replace(partial, location)
        partial = ""
    finally:
        if partial:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial)
        await asyncio.to_thread(shutil.rmtree, staging, True)


async def _resume(runtime: "Runtime", cid: str) -> None:
    try:
        await runtime.resume(cid)
    except CridError as exc:
        log.error("container left paused after its checkpoint", extra=fields(id=cid, error=str(exc)))
        raise FailedPrecondition(f"container {cid} could not be resumed after its checkpoint: {exc}") from exc


async def recover(runtime: "Runtime", c: Container, persist: str) -> None:
    """At startup: a checkpoint crid did not finish (it died meanwhile) has its container
    resumed (crid pauses containers only to checkpoint them), its partial archive and
    staging dir removed."""
    staged: list[str] = []
    with contextlib.suppress(FileNotFoundError):
        staged = [os.path.join(persist, n) for n in os.listdir(persist) if n.startswith(STAGING_PREFIX)]
    if not staged:
        return
    log.warning("unfinished checkpoint found; undoing it", extra=fields(id=c.id, staging=staged))
    state = await runtime.state(c.id)
    if state is not None and state.get("status") == "paused":
        await _resume(runtime, c.id)
    for staging in staged:
        with contextlib.suppress(OSError):
            os.unlink(_read_text(os.path.join(staging, PARTIAL)))
        await asyncio.to_thread(shutil.rmtree, staging, True)


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def _partial(directory: str, base: str, location: str) -> tuple[int, str]:
    """The archive is written next to the location, renamed there when whole."""
    try:
        return tempfile.mkstemp(prefix=f".{base}.", suffix=".partial", dir=directory)
    except OSError as exc:
        raise FailedPrecondition(f"cannot write the checkpoint archive {quote(location)}: {exc.strerror}") from exc


def _write_diff(staging: str, target: Target, skip: list[str], deadline: _Deadline, location: str) -> RootfsDiff:
    diff = rootfs_diff(target.upper, target.lowers, skip)
    try:
        with open(os.path.join(staging, ROOTFS_DIFF), "wb") as f:
            write_rootfs_diff(target.upper, diff, f, deadline)
    except OSError as exc:
        raise _write_error(location, exc) from exc
    return diff


def _write_archive(
    staging: str, c: Container, spec: dict[str, Any], diff: RootfsDiff, out: IO[bytes], deadline: _Deadline,
    location: str,
) -> None:  # fmt: skip
    try:
        write_archive(staging, c, spec, diff, out, deadline)
        out.flush()
        os.fsync(out.fileno())
    except OSError as exc:
        raise _write_error(location, exc) from exc


def _write_error(location: str, exc: OSError) -> Exception:
    message = f"writing the checkpoint archive {quote(location)} failed: {exc.strerror or exc}"
    return ResourceExhausted(message) if exc.errno in (errno.ENOSPC, errno.EDQUOT) else FailedPrecondition(message)


async def _dump(runtime: "Runtime", cid: str, staging: str, deadline: _Deadline) -> None:
    images = os.path.join(staging, IMAGES_DIR)
    os.mkdir(images, 0o700)
    try:
        await runtime.checkpoint(cid, images, staging, max(deadline.left(), 1.0))
    except FailedPrecondition as exc:
        deadline.check()  # a runtime killed at the time limit: DEADLINE_EXCEEDED, not its message
        runc, criu = str(exc).split("\nlog file:")[0], _criu_error(staging)
        raise FailedPrecondition(
            f"checkpoint of container {cid} failed: {runc}" + (f"; {criu}" if criu else "")
        ) from exc
    deadline.check()


def _read_spec(path: str) -> dict[str, Any]:
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict):
        raise FailedPrecondition(f"the OCI spec {path} is not a JSON object")
    return doc
