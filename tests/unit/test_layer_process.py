"""Each layer's pass runs in a process forked by the pull's zygote, not in the daemon:
the daemon's process never unpacks, the zygote goes when idle and comes back, and a
killed one fails the pull with a clear error and leaves nothing behind."""

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from cri.errors import FailedPrecondition
from cri.images import layer_process
from cri.images import unpack as unpack_mod
from cri.images.manager import Images
from tests.support import oci_build as ob
from tests.unit.pull_fixtures import FakeRegistry
from tests.unit.test_pull_pipeline import assert_nothing_committed, pull, pulled_trees, reference_trees

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking sets owners and makes device nodes: root only")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def gone(pid: int) -> bool:
    for _ in range(500):
        if not alive(pid):
            return True
        await asyncio.sleep(0.01)
    return False


def layered() -> ob.Image:
    return ob.Image(
        [
            ob.Layer([ob.Dir("etc", mode=0o750), ob.File("etc/a", b"a" * 70000)], "gzip"),
            ob.Layer([ob.File("etc/b", b"b"), ob.Whiteout("etc/a")], "zstd"),
        ]
    )


async def test_the_daemon_process_never_unpacks(
    registry: FakeRegistry, images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = layered()
    registry.add("v1", image)

    def in_this_process(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a layer was unpacked in the daemon's own process")

    monkeypatch.setattr(unpack_mod, "extract", in_this_process)
    monkeypatch.setattr(unpack_mod, "apply_layer", in_this_process)
    image_id = await pull(images, registry)
    monkeypatch.undo()
    assert pulled_trees(images, image_id) == reference_trees(tmp_path, image)
    assert images.puller.zygote.pid is not None and images.puller.zygote.pid != os.getpid()


async def test_the_zygote_goes_when_idle_and_comes_back(
    registry: FakeRegistry, images: Images, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(layer_process, "ZYGOTE_IDLE_SECONDS", 0.2)
    registry.add("v1", ob.Image([ob.Layer([ob.File("one", b"1")], "gzip")]))
    registry.add("v2", ob.Image([ob.Layer([ob.File("two", b"2")], "gzip")]))
    await pull(images, registry, "v1")
    first = images.puller.zygote.pid
    assert first is not None
    assert await gone(first), "the zygote outlived its idle time"
    await pull(images, registry, "v2")
    second = images.puller.zygote.pid
    assert second is not None and second != first
    assert await gone(second)
    await pull(images, registry, "v1")  # known, every layer on disk: no zygote
    assert images.puller.zygote.pid is None
    registry.add("v3", ob.Image([ob.Layer([ob.File("one", b"1")], "gzip")]))
    await pull(images, registry, "v3")  # a new name for the same layers: warmed, and it has no child to wait for
    for _ in range(500):  # warmed in the background
        if (third := images.puller.zygote.pid) is not None:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the pull did not warm the zygote")
    assert await gone(third), "a zygote with no child never went"


async def test_a_killed_zygote_fails_the_pull_clearly_and_leaves_nothing(
    registry: FakeRegistry, images: Images
) -> None:
    big = ob.Layer([ob.File("big", os.urandom(8 << 20))], "gzip")
    registry.add("v1", ob.Image([big]))
    registry.slow = 0.01
    task = asyncio.ensure_future(pull(images, registry))
    ingest = Path(images.config.root_dir) / "content" / "ingest"
    for _ in range(500):
        await asyncio.sleep(0.01)
        if any(p.name.startswith(images.content.ingest_prefix(big.digest)) for p in ingest.iterdir()):
            break
    else:
        pytest.fail("the pull never started its download")
    zygote = images.puller.zygote.pid
    assert zygote is not None
    os.kill(zygote, signal.SIGKILL)  # its children die with it
    with pytest.raises(FailedPrecondition, match="its pull process ended without an answer"):
        await task
    assert_nothing_committed(images)
    registry.slow = 0
    image_id = await pull(images, registry)  # a new zygote
    assert images.meta.images[image_id]


async def test_stopping_a_zygote_that_is_still_starting_ends_it() -> None:
    """A pull warms the zygote, then fails at once (no such image); the daemon stops meanwhile."""
    zygote = layer_process.Zygote("info", "logfmt")
    zygote.warm()
    for _ in range(500):
        if zygote.pid is not None:  # started, still importing: it has not said ready
            break
        await asyncio.sleep(0.001)
    pid = zygote.pid
    assert pid is not None
    await asyncio.wait_for(zygote.stop(), 10)
    assert await gone(pid)
