"""The pull pipeline against an in-process registry: each layer downloaded, verified and
unpacked in one pass, the layers in parallel, and the same snapshot trees as unpacking
them one after the other on top of each other.

Needs root (owners, device nodes, trusted.* xattrs), like the unpacker.
"""

import asyncio
import hashlib
import os
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from cri.errors import FailedPrecondition
from cri.images.auth import Credentials
from cri.images.layer_child import Job
from cri.images.layer_process import LayerProcess, Zygote
from cri.images.manager import Images
from cri.images.unpack import apply_layer
from tests.support import oci_build as ob
from tests.unit.pull_fixtures import FakeRegistry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking sets owners and makes device nodes: root only")

Tree = dict[str, tuple[Any, ...]]


def tree(root: str) -> Tree:
    """Everything about a snapshot's tree that a container can see, hard links as the
    first path of their inode; a directory's mtime only when an entry set it."""
    out: Tree = {}
    first: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            xattrs = {k: os.getxattr(path, k, follow_symlinks=False) for k in os.listxattr(path, follow_symlinks=False)}
            if kind == stat.S_IFDIR:
                what: Any = st.st_mtime if st.st_mtime == ob.MTIME else "made"
            elif kind == stat.S_IFREG:
                what = (
                    hashlib.sha256(Path(path).read_bytes()).hexdigest(),
                    st.st_mtime,
                    first.setdefault(st.st_ino, rel),
                )
            elif kind == stat.S_IFLNK:
                what = (os.readlink(path), st.st_mtime)
            else:
                what = st.st_rdev
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, what, sorted(xattrs.items()))
    return out


def reference_trees(tmp_path: Path, image: ob.Image) -> list[Tree]:
    """Today's unpack, one layer after the other on top of its lowers: the trees to get."""
    dirs: list[str] = []
    for i, layer in enumerate(image.layers):
        blob = tmp_path / f"ref-blob-{i}"
        blob.write_bytes(layer.blob)
        target = tmp_path / f"ref-{i}" / "fs"
        target.mkdir(parents=True)
        apply_layer(str(blob), layer.compression, str(target), list(reversed(dirs)), layer.diff_id)
        dirs.append(str(target))
    return [tree(d) for d in dirs]


def leftovers(images: Images) -> list[str]:
    root = Path(images.config.root_dir)
    found = [str(p) for p in (root / "content" / "ingest").iterdir()]
    found += [str(p) for p in (root / "snapshots").iterdir()]
    return found + [str(p) for p in (root / "content" / "blobs" / "sha256").iterdir()]


async def pull(images: Images, registry: FakeRegistry, tag: str = "v1") -> str:
    return await images.pull(f"{registry.host}/lib/x:{tag}", Credentials())


def pulled_trees(images: Images, image_id: str) -> list[Tree]:
    record = images.meta.images[image_id]
    return [tree(d) for d in reversed(images.snapshot_dirs(record))]


def cross_layer_image() -> ob.Image:
    """Layers whose unpack reads the ones below: implied dirs taking a lower dir's owner and mode
    (also through a lower symlink), whiteouts and opaque dirs, a hardlink to a lower file (copied
    up), a dir implied over a setgid one, an implied dir given its own entry later."""
    base = ob.Layer(
        [
            ob.Dir("usr/lib", mode=0o750, uid=7, gid=8),
            ob.Dir("usr/lib/x86_64-linux-gnu", mode=0o705, gid=50),
            ob.Symlink("lib", "usr/lib"),
            ob.File("bin/tool", b"tool", mode=0o755, uid=3),
            ob.File("etc/motd", b"old"),
            ob.Dir("var/cache/sub"),
            ob.File("var/cache/old", b"old"),
            ob.Dir("srv", mode=0o711, uid=9, gid=9),
            ob.Dir("opt/sg", mode=0o2775, gid=50),
            ob.File("keep/me", b"kept"),
        ],
        "gzip",
    )
    upper = ob.Layer(
        [
            ob.File("lib/x86_64-linux-gnu/libextra.so", b"elf"),
            ob.File("srv/data/file", os.urandom(3 << 20), uid=1000),
            ob.Whiteout("etc/motd"),
            ob.Opaque("var/cache"),
            ob.File("var/cache/new", b"new"),
            ob.File("data/a", b"a" * 5000),
            ob.Hardlink("data/b", "data/a"),
            ob.Device("dev/null", "c", 1, 3),
        ],
        "zstd",
    )
    copy_up = ob.Layer([ob.Hardlink("bin/alias", "bin/tool")], "none")
    setgid = ob.Layer([ob.File("opt/sg/sub/file", b"x")], "gzip")
    later = ob.Layer([ob.File("srv/x/y", b"y"), ob.Dir("srv", mode=0o700, uid=5), ob.Whiteout("keep")], "gzip")
    return ob.Image([base, upper, copy_up, setgid, later])


def record_extracts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(diff_id, deferred) of every unpack the pipeline starts (each in a child process)."""
    calls: list[tuple[str, bool]] = []
    real = LayerProcess.start

    async def spy(zygote: Zygote, job: Job, what: str) -> LayerProcess:
        if job.unpack is not None:
            calls.append((job.unpack.diff_id, job.unpack.lowers is None))
        return await real(zygote, job, what)

    monkeypatch.setattr(LayerProcess, "start", spy)
    return calls


async def test_parallel_layers_give_the_sequential_trees(
    registry: FakeRegistry, images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = cross_layer_image()
    registry.add("v1", image)
    calls = record_extracts(monkeypatch)
    image_id = await pull(images, registry)
    assert pulled_trees(images, image_id) == reference_trees(tmp_path, image)
    ids = [layer.diff_id for layer in image.layers]
    # every layer above the first was unpacked before its lowers were there (deferred) ...
    assert (ids[0], False) in calls and all((d, True) in calls for d in ids[1:])
    # ... and the copy-up and the setgid one again on top of them, from the content store
    assert (ids[2], False) in calls and (ids[3], False) in calls
    assert (ids[1], False) not in calls and (ids[4], False) not in calls
    for layer in image.layers:
        assert registry.downloads(layer.digest) == 1
    assert [p for p in leftovers(images) if "/ingest/" in p or "/tmp-" in p] == []


async def test_a_layer_in_the_content_store_is_unpacked_from_it(
    registry: FakeRegistry, images: Images, tmp_path: Path
) -> None:
    image = cross_layer_image()
    registry.add("v1", image)
    stored = image.layers[1]
    images.content.put_bytes(stored.digest, stored.blob)
    image_id = await pull(images, registry)
    assert registry.downloads(stored.digest) == 0
    assert pulled_trees(images, image_id) == reference_trees(tmp_path, image)


async def test_broken_download_resumes_mid_layer(registry: FakeRegistry, images: Images, tmp_path: Path) -> None:
    big = ob.Layer([ob.File("big", os.urandom(4 << 20)), ob.File("after", b"tail")], "gzip")
    image = ob.Image([ob.Layer([ob.File("base", b"b")], "gzip"), big])
    registry.add("v1", image)
    registry.break_after[big.digest] = big.size // 2 + 12345
    image_id = await pull(images, registry)
    ranges = [rng for digest, rng in registry.gets if digest == big.digest]
    assert ranges == [None, f"bytes={big.size // 2 + 12345}-"]
    assert pulled_trees(images, image_id) == reference_trees(tmp_path, image)
    assert images.content.read(big.digest) == big.blob


async def test_server_ignoring_range_sends_it_all_again(registry: FakeRegistry, images: Images, tmp_path: Path) -> None:
    big = ob.Layer([ob.File("big", os.urandom(3 << 20))], "zstd")
    image = ob.Image([big])
    registry.add("v1", image)
    registry.break_after[big.digest] = 1_500_000
    registry.ignore_range = True
    image_id = await pull(images, registry)
    assert registry.downloads(big.digest) == 2
    assert pulled_trees(images, image_id) == reference_trees(tmp_path, image)


def assert_nothing_committed(images: Images) -> None:
    assert images.meta.images == {} and images.meta.snapshots == {}
    assert leftovers(images) == []


async def test_digest_mismatch_fails_and_commits_nothing(registry: FakeRegistry, images: Images) -> None:
    bad = ob.Layer([ob.File("tampered", os.urandom(1 << 20))], "gzip")
    image = ob.Image([ob.Layer([ob.File("base", b"b")], "gzip"), bad])
    tampered = bytearray(bad.blob)
    tampered[len(tampered) // 2] ^= 0xFF  # the gzip stream breaks there too: the digest is what is reported
    registry.add("v1", image, {bad.digest: bytes(tampered)})
    with pytest.raises(FailedPrecondition, match=f"blob {bad.digest}: digest mismatch"):
        await pull(images, registry)
    assert_nothing_committed(images)


async def test_diff_id_mismatch_fails_and_commits_nothing(registry: FakeRegistry, images: Images) -> None:
    layers = [ob.Layer([ob.File("base", b"b")], "gzip"), ob.Layer([ob.File("f", os.urandom(100_000))], "gzip")]
    wrong = "sha256:" + "0" * 64
    image = ob.Image(layers, extra_config={"rootfs": {"type": "layers", "diff_ids": [layers[0].diff_id, wrong]}})
    registry.add("v1", image)
    with pytest.raises(FailedPrecondition, match=f"layer {wrong}: diff_id mismatch"):
        await pull(images, registry)
    assert_nothing_committed(images)


async def test_truncated_layer_stream_fails_and_commits_nothing(registry: FakeRegistry, images: Images) -> None:
    full = ob.build_tar([ob.File("a", b"first"), ob.File("b", os.urandom(200_000))])
    cut = full[: len(full) - 2 * 512 - 50_000]  # 50 kB of b's data missing
    layer = ob.Layer(tar=cut, compression="gzip")
    registry.add("v1", ob.Image([ob.Layer([ob.File("base", b"b")], "gzip"), layer]))
    with pytest.raises(FailedPrecondition, match="'b' is cut short"):
        await pull(images, registry)
    assert_nothing_committed(images)


async def test_cancelled_mid_layer_leaves_nothing(registry: FakeRegistry, images: Images) -> None:
    big = ob.Layer([ob.File("big", os.urandom(8 << 20))], "gzip")
    registry.add("v1", ob.Image([big]))
    registry.slow = 0.01
    task = asyncio.ensure_future(pull(images, registry))
    root = Path(images.config.root_dir)
    ingest, snapshots = root / "content" / "ingest", root / "snapshots"
    for _ in range(500):
        await asyncio.sleep(0.01)
        files = list(ingest.iterdir())
        unpacked = [p for d in snapshots.glob("tmp-*") for p in (d / "fs").rglob("*")]
        if files and unpacked and unpacked[0].stat().st_size > 0:  # downloading, and unpacking as it goes
            break
    else:
        pytest.fail("the pull never got to unpacking while downloading")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_nothing_committed(images)


async def test_concurrent_pulls_share_each_download(registry: FakeRegistry, images: Images, tmp_path: Path) -> None:
    image = cross_layer_image()
    registry.add("v1", image)
    registry.add("v2", image)
    registry.slow = 0.001
    ids = await asyncio.gather(pull(images, registry, "v1"), pull(images, registry, "v2"), pull(images, registry))
    assert set(ids) == {image.config_digest}
    for layer in image.layers:
        assert registry.downloads(layer.digest) == 1
    assert pulled_trees(images, ids[0]) == reference_trees(tmp_path, image)


async def test_removing_an_image_deletes_its_blobs_off_the_event_loop(
    registry: FakeRegistry, images: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.add("v1", cross_layer_image())
    image_id = await pull(images, registry)
    blobs, ingest = images.content.blobs, images.content.ingest_dir
    assert len(os.listdir(blobs)) > 2  # the layers, the config, the manifest
    unlinked_on: list[str] = []
    real_unlink = os.unlink

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        unlinked_on.append(threading.current_thread().name)
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    await images.remove(image_id)
    assert os.listdir(blobs) == [] and os.listdir(ingest) == []
    assert unlinked_on and threading.main_thread().name not in unlinked_on  # the loop's thread never waits for it
