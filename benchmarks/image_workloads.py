"""The image workloads: cold pulls of the big and the small-files image, and the runtime's lists
while a pull runs, beside the machine's own pull (pull_floor.py)."""

import os
import threading
import time
from collections.abc import Callable

from benchmarks import pull_floor
from benchmarks.core import (
    CriTarget,
    NotSupported,
    Params,
    PushedImage,
    Row,
    RowSamples,
    cri_rows_workload,
    probe,
)
from benchmarks.cri_calls import (
    IMAGE_RPCS,
    RPC_TIMEOUT,
    has_image,
    images_of,
    pull,
    remove_image,
)
from cri.api.v1 import api_pb2 as pb

LIST_INTERVAL = 0.01  # seconds between two rounds of List calls during a pull
COLD_TIMEOUT = 120.0  # seconds for a removed image's blobs and snapshots to be garbage collected
MB = 1_000_000


def snapshot_dirs(t: CriTarget) -> set[str]:
    """The numbered snapshot directories of the runtime's snapshotter (unpacked layers)."""
    try:
        return {n for n in os.listdir(t.snapshots_dir) if n.isdigit()}
    except FileNotFoundError:
        return set()


def make_cold(t: CriTarget, image: PushedImage, snapshots: set[str] | None = None) -> None:
    """RemoveImage, then wait until the runtime's garbage collection has deleted the image's blobs
    from its content store and its unpacked layers (``snapshots``: their dirs, when known; else
    until the snapshot dirs stop changing): the next pull of it is cold."""
    remove_image(t, image.ref)
    if has_image(t, image.ref):
        raise RuntimeError(f"{t.name} still lists {image.ref} after RemoveImage")
    deadline = time.monotonic() + COLD_TIMEOUT
    last: set[str] | None = None
    stable = 0
    while True:
        blobs = [d for d in image.blobs if (t.content_dir / d.removeprefix("sha256:")).exists()]
        dirs = snapshot_dirs(t)
        if snapshots is not None:
            done = not (dirs & snapshots)
        else:
            stable = stable + 1 if dirs == last else 0
            last = dirs
            done = stable >= 3
        if not blobs and done:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"{t.name} kept {len(blobs)} blob(s) of {image.ref} ({t.content_dir}) and its snapshots "
                f"{sorted(dirs & snapshots) if snapshots else '?'} for {COLD_TIMEOUT:g}s after RemoveImage"
            )
        time.sleep(0.05)


def timed_cold_pulls(t: CriTarget, image: PushedImage, count: int) -> tuple[list[float], list[float]]:
    """``count`` pulls of ``image``, each from a cold store; returns (MB/s, seconds) per pull.

    Each starts from a clean page cache state, as the floor's passes do (pull_floor.py): what the
    pull before it, the other runtime's or the removal left dirty is written out first, untimed."""
    make_cold(t, image)
    mbps, seconds = [], []
    for _ in range(count):
        before = snapshot_dirs(t)
        os.sync()
        t0 = time.perf_counter()
        pull(t, image.ref)
        elapsed = time.perf_counter() - t0
        if not has_image(t, image.ref):
            raise RuntimeError(f"{t.name} does not list {image.ref} after pulling it")
        mbps.append(image.compressed_bytes / MB / elapsed)
        seconds.append(elapsed)
        make_cold(t, image, snapshot_dirs(t) - before)
    return mbps, seconds


@cri_rows_workload(
    "image_pull_big",
    (
        Row("mbps", "cold pull, big image (large incompressible files): MB/s", "MB/s"),
        Row("seconds", "cold pull, big image: seconds"),
    ),
    count=1,
    runs=5,
    rpcs=IMAGE_RPCS,
    needs_images=True,
)
def image_pull_big(t: CriTarget, p: Params) -> RowSamples:
    mbps, seconds = timed_cold_pulls(t, images_of(p).big, p.count)
    return {"mbps": mbps, "seconds": seconds}


@cri_rows_workload(
    "image_pull_small",
    (
        Row("mbps", "cold pull, small-files image: MB/s", "MB/s"),
        Row("seconds", "cold pull, small-files image: seconds"),
    ),
    count=1,
    runs=3,
    rpcs=IMAGE_RPCS,
    needs_images=True,
)
def image_pull_small(t: CriTarget, p: Params) -> RowSamples:
    mbps, seconds = timed_cold_pulls(t, images_of(p).small, p.count)
    return {"mbps": mbps, "seconds": seconds}


def _sample_lists(
    calls: dict[str, Callable[[], object]],
    out: dict[str, list[float]],
    stop: threading.Event,
    errors: list[BaseException],
) -> None:
    """Call each of ``calls`` in turn, timing each into ``out``, until ``stop`` is set."""
    try:
        while not stop.is_set():
            for key, call in calls.items():
                t0 = time.perf_counter()
                call()
                out[key].append(time.perf_counter() - t0)
            stop.wait(LIST_INTERVAL)
    except BaseException as exc:
        errors.append(exc)


@cri_rows_workload(
    "list_during_pull",
    (
        Row("images", "ListImages during a cold pull of the big image"),
        Row("containers", "ListContainers during a cold pull of the big image"),
        Row(
            "images_floor", "floor: ListImages of the idle daemon while the machine floor's pull of the big image runs"
        ),
    ),
    count=1,
    runs=2,
    rpcs=(*IMAGE_RPCS, "ListImages"),
    needs_images=True,
)
def list_during_pull(t: CriTarget, p: Params) -> RowSamples:
    """Pull the big image (cold) while a second thread calls ListImages and ListContainers in a loop,
    10 ms apart: a pull must not stall the runtime's reads. The floor: the same ListImages loop while
    the daemon does nothing and the pull_floor pipeline (other processes) takes the machine's CPU and disk."""
    image = images_of(p).big
    out: dict[str, list[float]] = {"images": []}
    calls: dict[str, Callable[[], object]] = {
        "images": lambda: t.client.image.ListImages(pb.ListImagesRequest(), timeout=RPC_TIMEOUT)
    }
    missing = probe(t.client, "ListContainers")
    if missing is None:
        out["containers"] = []
        calls["containers"] = lambda: t.client.runtime.ListContainers(pb.ListContainersRequest(), timeout=RPC_TIMEOUT)
    make_cold(t, image)
    for _ in range(p.count):
        stop = threading.Event()
        errors: list[BaseException] = []
        sampler = threading.Thread(target=_sample_lists, args=(calls, out, stop, errors), name="bench-list-sampler")
        before = snapshot_dirs(t)
        os.sync()  # as before each timed pull
        sampler.start()
        try:
            pull(t, image.ref)
        finally:
            stop.set()
            sampler.join()
        if errors:
            raise errors[0]
        make_cold(t, image, snapshot_dirs(t) - before)
    floor: dict[str, list[float]] = {"images": []}
    for _ in range(p.count):
        stop = threading.Event()
        errors = []
        sampler = threading.Thread(target=_sample_lists, args=({"images": calls["images"]}, floor, stop, errors))
        os.sync()
        sampler.start()
        try:
            pull_floor.floor_seconds(image, p.workdir)
        finally:
            stop.set()
            sampler.join()
        if errors:
            raise errors[0]
    rows: RowSamples = dict(out)
    rows["images_floor"] = floor["images"]
    if missing is not None:
        rows["containers"] = NotSupported(missing)
    return rows
