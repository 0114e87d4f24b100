"""CheckpointContainer without CRIU: the writable layer's diff from a fake
overlay upper dir (whiteouts, opaque directories, mount points), the archive's
layout and metadata as checkpointctl reads them, the request's checks, the
`criu check` probe on stand-in binaries, and the pause/dump/resume sequence on
the fake runtime (nothing left at the location when anything fails)."""

import asyncio
import io
import json
import os
import stat
import tarfile
from pathlib import Path
from typing import Any

import pytest

from cri.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unimplemented
from cri.runtime import checkpoint
from cri.runtime.checkpoint import CriuSupport, RootfsDiff, check_request, probe_criu, rootfs_diff
from cri.runtime.container_store import Container, State
from tests.unit.runtime_fakes import Node, container_config, pod_config

TIMEOUT = 10.0


def _whiteout(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
    except PermissionError:
        pytest.skip("making an overlayfs whiteout (a 0/0 character device) needs CAP_MKNOD")


def _opaque(path: Path) -> None:
    try:
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    except OSError as exc:
        pytest.skip(f"setting trusted.overlay.opaque needs CAP_SYS_ADMIN and xattrs on {path}: {exc.strerror}")


@pytest.fixture
def layers(tmp_path: Path) -> tuple[Path, Path]:
    """A lower layer and a container's upper dir over it."""
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    for f in ("etc/motd", "etc/passwd", "var/cache/a", "var/cache/b", "bin/sh"):
        (lower / f).parent.mkdir(parents=True, exist_ok=True)
        (lower / f).write_text(f"lower {f}\n")
    (upper / "etc").mkdir(parents=True)
    (upper / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\nnew:x:1000:1000::/:/bin/sh\n")
    (upper / "etc/hosts").write_text("")  # runc's mount point of a bind-mounted file
    (upper / "tmp/work").mkdir(parents=True)
    (upper / "tmp/work/counter").write_text("41\n")
    (upper / "tmp/work/link").symlink_to("counter")
    (upper / "proc").mkdir()  # a mount point runc made
    _whiteout(upper / "etc/motd")
    (upper / "var/cache").mkdir(parents=True)
    _opaque(upper / "var/cache")
    (upper / "var/cache/b").write_text("new b\n")
    return lower, upper


def test_diff_whiteouts_are_deletions_and_mount_points_are_left_out(layers: tuple[Path, Path]) -> None:
    lower, upper = layers
    diff = rootfs_diff(str(upper), [str(lower)], skip=["/proc", "/etc/hosts", "/dev"])
    assert diff.files == [
        "etc", "etc/passwd", "tmp", "tmp/work", "tmp/work/counter", "tmp/work/link", "var", "var/cache", "var/cache/b",
    ]  # fmt: skip
    # the opaque dir hides the lower's var/cache/a (b is the container's own again)
    assert diff.deleted == ["/etc/motd", "/var/cache/a"]


def test_opaque_directory_without_lower_layers_deletes_nothing_it_cannot_name(layers: tuple[Path, Path]) -> None:
    _, upper = layers
    assert rootfs_diff(str(upper)).deleted == ["/etc/motd"]


def test_empty_upper_dir_has_no_diff(tmp_path: Path) -> None:
    assert rootfs_diff(str(tmp_path)) == RootfsDiff()


def _members(data: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: m for m in tar.getmembers()}


def _read(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def test_rootfs_diff_tar_holds_the_upper_entries_without_whiteouts(layers: tuple[Path, Path]) -> None:
    lower, upper = layers
    os.chown(upper / "tmp/work/counter", 1234, 5678) if os.geteuid() == 0 else None
    diff = rootfs_diff(str(upper), [str(lower)], skip=["/proc", "/etc/hosts"])
    out = io.BytesIO()
    checkpoint.write_rootfs_diff(str(upper), diff, out)
    members = _members(out.getvalue())
    assert list(members) == diff.files
    assert "etc/motd" not in members and members["tmp/work/link"].issym() and members["var/cache"].isdir()
    counter = members["tmp/work/counter"]
    assert (counter.uname, counter.gname) == ("", "")  # ids only: the host's names mean nothing in the container
    if os.geteuid() == 0:
        assert (counter.uid, counter.gid) == (1234, 5678)
    assert _read(out.getvalue(), "tmp/work/counter") == b"41\n"


def test_archive_lists_deletions_in_deleted_files(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    (staging / "checkpoint").mkdir(parents=True)
    (staging / "checkpoint/inventory.img").write_bytes(b"x")
    (staging / "stats-dump").write_bytes(b"s")
    rec = Container(id="a" * 64, name="c_p_ns_uid_0", fingerprint="", sandbox_id="b" * 64, state=State.RUNNING,
                    created_at=1_764_615_600_000_000_000, config=container_config(), handler="runc",
                    log_path=str(tmp_path / "c.log"))  # fmt: skip
    (tmp_path / "c.log").write_text("2026-12-01T19:00:00.000000000Z stdout F hello\n")
    out = io.BytesIO()
    checkpoint.write_archive(str(staging), rec, {"ociVersion": "1.0.2"}, RootfsDiff([], ["/etc/motd"]), out)
    data = out.getvalue()
    assert list(_members(data)) == ["config.dump", "spec.dump", "checkpoint", "checkpoint/inventory.img",
                                    "deleted.files", "stats-dump", "container.log"]  # fmt: skip
    assert _read(data, "container.log").endswith(b" stdout F hello\n")
    assert json.loads(_read(data, "deleted.files")) == ["/etc/motd"]
    assert json.loads(_read(data, "config.dump"))["createdTime"] == "2025-12-01T19:00:00Z"


def test_go_time_is_rfc3339_with_nanoseconds() -> None:
    assert checkpoint._go_time(1_764_615_600_123_456_789) == "2025-12-01T19:00:00.123456789Z"
    assert checkpoint._go_time(1_764_615_600_000_000_000) == "2025-12-01T19:00:00Z"
    assert checkpoint._go_time(1_764_615_600_500_000_000) == "2025-12-01T19:00:00.5Z"
    assert checkpoint._go_time(0) == checkpoint.ZERO_TIME


@pytest.mark.parametrize(
    ("location", "timeout", "error", "words"),
    [
        ("", 0, InvalidArgument, "location is empty"),
        ("ckpt.tar", 0, InvalidArgument, "not an absolute path"),
        ("/tmp/", 0, InvalidArgument, "is a directory"),
        ("/", 0, InvalidArgument, "is a directory"),
        ("/nonexistent-dir/ckpt.tar", 0, FailedPrecondition, "does not exist"),
        ("/tmp/ckpt.tar", -1, InvalidArgument, "timeout -1 is negative"),
    ],
)
def test_request_checks(location: str, timeout: int, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        check_request(location, timeout)


def test_request_timeout_zero_is_the_default() -> None:
    assert check_request("/tmp/ckpt.tar", 0) == checkpoint.DEFAULT_TIMEOUT
    assert check_request("/tmp/ckpt.tar", 7) == 7


# --- the probe --------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "criu"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_probe_reports_criu_missing(tmp_path: Path) -> None:
    found = asyncio.run(probe_criu(str(tmp_path / "no-criu")))
    assert not found.supported and "not installed" in found.reason


def test_probe_reports_the_first_line_criu_prints(tmp_path: Path) -> None:
    criu = _script(
        tmp_path, 'echo "Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds" >&2\necho more >&2\nexit 1\n'
    )
    found = asyncio.run(probe_criu(criu))
    assert found == CriuSupport(
        False, "criu check failed: Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds"
    )
    assert found.describe() == {"supported": False, "reason": found.reason, "probe": "criu check"}


def test_probe_passes_where_criu_check_does(tmp_path: Path) -> None:
    assert asyncio.run(probe_criu(_script(tmp_path, 'echo "Looks good."\n'))) == CriuSupport(True)


def test_probe_gives_up_on_a_hung_criu(tmp_path: Path) -> None:
    found = asyncio.run(probe_criu(_script(tmp_path, "exec sleep 30\n"), time_limit=0.2))
    assert not found.supported and "did not finish within 0.2s" in found.reason


def test_handlers_probe_criu_at_startup(tmp_path: Path) -> None:
    from cri.runtime.handlers import Handlers

    node = Node(tmp_path)
    found = CriuSupport(False, "criu check failed: vdso")

    async def probe() -> CriuSupport:
        return found

    handlers = Handlers(node.config, lambda name, binary, root: node.runtime, criu_probe=probe)
    assert handlers.criu == checkpoint.UNPROBED and not handlers.criu.supported
    asyncio.run(handlers.probe())
    assert handlers.criu is found
    node.store.close()


def test_runc_command_lines(tmp_path: Path) -> None:
    from cri.runtime.oci import OciRuntime

    argv = tmp_path / "argv"
    runc = _script(tmp_path, f'echo "$@" | sed "s|--log [^ ]*|--log LOG|" >> {argv}\n')
    runtime = OciRuntime("runc", runc, str(tmp_path / "root"))

    async def main() -> None:
        await runtime.pause("c1")
        await runtime.checkpoint("c1", "/s/checkpoint", "/s", 5.0)
        await runtime.resume("c1")

    asyncio.run(main())
    common = f"--root {tmp_path / 'root'} --log LOG --log-format json"
    assert argv.read_text().splitlines() == [
        f"{common} pause c1",
        f"{common} checkpoint --image-path /s/checkpoint --work-path /s --leave-running --file-locks c1",
        f"{common} resume c1",
    ]


# --- through Containers, on the fake runtime --------------------------------------------------


def run(tmp_path: Path, body: Any, criu: CriuSupport = CriuSupport(True)) -> Node:  # noqa: B008 (frozen)
    """``body(node, running container id, location)``."""

    async def main() -> Node:
        node = Node(tmp_path)
        node.containers.handlers.criu = criu
        await node.start()
        try:
            sid = await node.pods.run(pod_config(), "")
            cid = await node.containers.create(sid, container_config())
            await node.containers.start(cid)
            upper = Path(node.containers.persist(cid), "upper")
            (upper / "data").mkdir(parents=True, exist_ok=True)
            (upper / "data/counter").write_text("7\n")
            await asyncio.wait_for(body(node, cid, str(tmp_path / "out" / "ckpt.tar")), TIMEOUT)
        finally:
            await node.close()
        return node

    (tmp_path / "out").mkdir()
    return asyncio.run(main())


def _calls(node: Node) -> list[str]:
    return [c for c in node.faults.calls if c in ("runtime.pause", "runtime.checkpoint", "runtime.resume")]


def _left(node: Node, cid: str, location: str) -> list[str]:
    """What a checkpoint may leave behind: files in the location's dir, staging dirs."""
    staging = [n for n in os.listdir(node.containers.persist(cid)) if n.startswith("checkpoint-")]
    return sorted(os.listdir(os.path.dirname(location))) + staging


def test_checkpoint_writes_the_archive_and_leaves_the_container_running(tmp_path: Path) -> None:
    async def body(node: Node, cid: str, location: str) -> None:
        await node.containers.checkpoint(cid, location, 0)
        c = node.containers.get(cid)
        assert c.state == State.RUNNING and node.runtime.containers[cid].status == "running"
        assert _calls(node) == ["runtime.pause", "runtime.checkpoint", "runtime.resume"]
        assert _left(node, cid, location) == ["ckpt.tar"] and stat.S_IMODE(os.stat(location).st_mode) == 0o600
        data = Path(location).read_bytes()  # noqa: ASYNC240
        assert list(_members(data)) == [
            "config.dump", "spec.dump", "checkpoint", "checkpoint/inventory.img", "checkpoint/pages-1.img",
            "rootfs-diff.tar", "dump.log",
        ]  # fmt: skip
        config = json.loads(_read(data, "config.dump"))
        assert config["id"] == cid and config["name"] == c.name and config["runtime"] == c.handler
        assert config["rootfsImage"] == c.config.image.image and config["rootfsImageRef"] == c.image_ref
        assert config["rootfsImageName"] == c.image_name and config["restored"] is False
        assert config["createdTime"].endswith("Z") and config["restoredTime"] == checkpoint.ZERO_TIME
        spec = json.loads(Path(node.containers.bundle(cid), "config.json").read_text())  # noqa: ASYNC240
        assert json.loads(_read(data, "spec.dump")) == spec
        diff = _read(data, "rootfs-diff.tar")
        assert "data/counter" in _members(diff) and _read(diff, "data/counter") == b"7\n"

    run(tmp_path, body)


def test_where_criu_fails_the_check_the_reason_is_criu_s_and_nothing_is_done(tmp_path: Path) -> None:
    async def body(node: Node, cid: str, location: str) -> None:
        with pytest.raises(FailedPrecondition, match="not supported on this node: criu check failed: vdso"):
            await node.containers.checkpoint(cid, location, 0)
        assert _calls(node) == [] and _left(node, cid, location) == []
        assert node.containers.get(cid).state == State.RUNNING

    run(tmp_path, body, CriuSupport(False, "criu check failed: vdso"))


def test_a_failed_dump_resumes_the_container_and_leaves_nothing(tmp_path: Path) -> None:
    async def refusing(cid: str, images: str, work: str, time_limit: float) -> None:
        """runc's answer when CRIU fails: its message only points at dump.log."""
        log = "(00.01) Dumping\n(00.02) Error (criu/vdso.c:381): vdso: bounds\n(00.03) Error (criu/x.c:1): later\n"
        Path(work, "dump.log").write_text(log)  # noqa: ASYNC240
        raise FailedPrecondition(f"runc checkpoint: criu failed: type DUMP errno 0\nlog file: {work}/dump.log")

    async def body(node: Node, cid: str, location: str) -> None:
        node.runtime.checkpoint = refusing  # type: ignore[method-assign,assignment]
        with pytest.raises(FailedPrecondition) as err:
            await node.containers.checkpoint(cid, location, 0)
        assert str(err.value) == (
            f"checkpoint of container {cid} failed: runc checkpoint: criu failed: type DUMP errno 0; "
            "Error (criu/vdso.c:381): vdso: bounds"
        )
        assert _calls(node) == ["runtime.pause", "runtime.resume"] and _left(node, cid, location) == []
        assert node.runtime.containers[cid].status == "running"

    run(tmp_path, body)


def test_a_dump_past_the_timeout_is_deadline_exceeded(tmp_path: Path) -> None:
    async def slow(cid: str, images: str, work: str, time_limit: float) -> None:
        await asyncio.sleep(time_limit)  # the runtime killed at its time limit says so
        raise FailedPrecondition(f"runc: 'checkpoint' did not finish within {time_limit:g}s")

    async def body(node: Node, cid: str, location: str) -> None:
        node.runtime.checkpoint = slow  # type: ignore[method-assign,assignment]
        with pytest.raises(DeadlineExceeded, match="within 1s"):
            await node.containers.checkpoint(cid, location, 1)
        assert _left(node, cid, location) == [] and node.runtime.containers[cid].status == "running"

    run(tmp_path, body)


def test_a_checkpoint_cut_short_by_a_crash_is_undone_at_startup(tmp_path: Path) -> None:
    async def body(node: Node, cid: str, location: str) -> None:
        held = node.faults.hold("runtime.checkpoint")
        task = asyncio.create_task(node.containers.checkpoint(cid, location, 0))
        while "runtime.checkpoint" not in node.faults.calls:  # noqa: ASYNC110 (the fake logs, it has no event)
            await asyncio.sleep(0.01)
        assert node.runtime.containers[cid].status == "paused" and len(os.listdir(os.path.dirname(location))) == 1
        after = node.reopened()  # crid died in the dump: a new daemon on the same state
        await after.start()
        try:
            assert node.runtime.containers[cid].status == "running" and _left(after, cid, location) == []
            assert after.containers.get(cid).state == State.RUNNING
        finally:
            task.cancel()
            held.set()
            with pytest.raises(asyncio.CancelledError):
                await task
            await after.close()

    run(tmp_path, body)


def test_request_errors_come_before_any_work(tmp_path: Path) -> None:
    async def body(node: Node, cid: str, location: str) -> None:
        with pytest.raises(NotFound):
            await node.containers.checkpoint("f" * 64, location, 0)
        with pytest.raises(InvalidArgument, match="not an absolute path"):
            await node.containers.checkpoint(cid, "ckpt.tar", 0)
        await node.containers.stop(cid, 0)
        with pytest.raises(FailedPrecondition, match="is exited, not running"):
            await node.containers.checkpoint(cid, location, 0)
        assert _calls(node) == [] and _left(node, cid, location) == []

    run(tmp_path, body, CriuSupport(False, "criu check failed: vdso"))  # the checks come first all the same


def test_pod_checkpointing_is_unimplemented_with_the_reason(tmp_path: Path) -> None:
    from cri.api.v1 import api_pb2 as pb
    from cri.server.runtime_service import RuntimeServicer

    node = Node(tmp_path)
    servicer = RuntimeServicer(node.config, node.pods, node.containers, streaming=None)  # type: ignore[arg-type]
    words = r"^\w+ is not implemented: crid has no pod checkpointing; "
    with pytest.raises(Unimplemented, match=words):
        asyncio.run(servicer.CheckpointPod(pb.CheckpointPodRequest(), None))
    with pytest.raises(Unimplemented, match=words):
        asyncio.run(servicer.RestorePod(pb.RestorePodRequest(), None))
    node.store.close()
