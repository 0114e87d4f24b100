"""Pulling an image: resolve, verify, download and unpack, then record it.

A pull resolves the reference through the configured hosts to a manifest
and a config (resolve.py: the platform's entry of an index, each document
verified against its digest and size), stores them in the content store,
verifies and unpacks each layer once into a snapshot keyed by its chain id;
only then is the image recorded. Blob downloads and unpacks are shared
between concurrent pulls.

Each layer takes one pass over its bytes, as they arrive, in a process of
its own (cri/images/layer_child.py, forked by layer_process.Zygote): it
downloads the blob, writes it to the ingest file and hashes it (the digest
check, content.Ingest), decompresses it and unpacks the tar into the layer's
tmp snapshot dir (unpack.extract, hashing the diff_id), and reports its
progress and outcome to the daemon. Nothing is written and read back; the
daemon's event loop, GIL and heap carry none of it. A broken download
resumes with Range and the pass goes on where it was; a server that
ignores Range sends the start again, which is skipped.
The blob is committed to the content store only if size and digest match,
the snapshot only if the diff_id does too, and a digest mismatch is what is
reported even when the broken bytes broke the unpack first.

All layers are unpacked at once: each snapshot holds only its own diff, so
they are independent, except for what an unpack reads in the layers below
(implied dirs' owner and mode, lower non-directories refused, hardlinks to
lower files). A layer whose lowers are not committed yet is unpacked
deferred and finished once they are (unpack.Applied.finish); where that
could differ from unpacking on top of them (unpack.NeedsLowers) it is
unpacked again from the content store on top of them. Commits follow the
chain: a layer's snapshot is committed after the one below it.
"""

from __future__ import annotations  # _Unpack is defined below the methods that take it

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cri import faults
from cri.config import Config
from cri.errors import Unavailable
from cri.host import HOST
from cri.images.auth import Credentials, TokenCache
from cri.images.content import ContentStore
from cri.images.hosts import load_hosts
from cri.images.http import Session
from cri.images.layer_child import Download, Job, Unpack
from cri.images.layer_process import LayerProcess, Zygote, as_applied
from cri.images.manifest import Layer, user_of
from cri.images.metadata import ImageMetadata, ImageRecord, SnapshotRecord, now_ns
from cri.images.pull_metrics import (
    ACTIVE,
    DOWNLOADED_BYTES,
    LAYERS,
    PULL_SECONDS,
    PULLS,
    PULLS_IN_FLIGHT,
    SKIPPED_BYTES,
    Progress,
)
from cri.images.reference import Reference, parse
from cri.images.registry import Repository
from cri.images.resolve import resolve
from cri.images.shared import SharedTasks
from cri.images.snapshots import Snapshots
from cri.images.stream import Cancelled, in_thread
from cri.images.unpack import Applied, NeedsLowers
from cri.log import fields

log = logging.getLogger(__name__)

T = TypeVar("T")
# layers unpacked from the content store at once (those of a download are bounded by the downloads)
UNPACK_THREADS = max(2, os.cpu_count() or 1)


class Puller:
    """The pulls of one image store; ``held()`` is what they need kept from GC."""

    def __init__(
        self,
        config: Config,
        content: ContentStore,
        snapshots: Snapshots,
        meta: ImageMetadata,
        http: Callable[[], Session],
        gc: Callable[[], Awaitable[None]],
    ) -> None:
        self.config = config
        self.content = content
        self.snapshots = snapshots
        self.meta = meta
        self.tokens = TokenCache()
        self._http = http
        self._gc = gc
        self._blobs: SharedTasks[None] = SharedTasks()
        self._unpacks: SharedTasks[None] = SharedTasks()
        self._listeners: dict[str, set[Progress]] = {}
        self._pinned: list[set[str]] = []  # blobs and chain ids that in-flight pulls hold
        self._idle = asyncio.Event()  # set while no pull is in flight
        self._idle.set()
        self._unpack_slots = asyncio.Semaphore(UNPACK_THREADS)
        self.zygote = Zygote(config.log.level, config.log.format)  # forks each layer's process

    def held(self) -> set[str]:
        """Blobs and chain ids in-flight pulls need: GC keeps them."""
        keep: set[str] = set().union(*self._pinned) if self._pinned else set()
        return keep | self._blobs.running() | self._unpacks.running()

    async def drain(self, seconds: float) -> None:
        """At shutdown: wait (bounded) for cancelled pulls to clean up after themselves."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), seconds)

    async def pull(self, text: str, credentials: Credentials) -> str:
        """Pull ``text``; returns the image id. Cancelled when it makes no
        progress for the configured timeout or when the caller goes away."""
        ref = parse(text)
        started = time.monotonic()
        progress = Progress(image=str(ref))
        ACTIVE.add(progress)
        pinned: set[str] = set()
        self._pinned.append(pinned)
        self._idle.clear()
        PULLS_IN_FLIGHT.inc()
        job = asyncio.ensure_future(self._pull(ref, credentials, progress, pinned))
        timeout = self.config.images.pull_progress_timeout_seconds
        outcome = "error"
        try:
            while True:
                done, _ = await asyncio.wait({job}, timeout=min(1.0, timeout))
                if done:
                    image_id = job.result()
                    outcome = "success"
                    PULL_SECONDS.observe(time.monotonic() - started)
                    return image_id
                if not progress.busy and time.monotonic() - progress.last > timeout:
                    job.cancel()
                    await asyncio.wait({job})
                    raise Unavailable(f"pulling {ref} made no progress for {timeout:g}s; cancelled")
        except asyncio.CancelledError:
            outcome = "cancelled"
            job.cancel()
            await asyncio.wait({job})
            raise
        finally:
            ACTIVE.discard(progress)
            PULLS_IN_FLIGHT.dec()
            PULLS.labels(outcome).inc()
            self._pinned.remove(pinned)
            if outcome != "success":
                await self._gc()
            if not self._pinned:  # the last pull is done: give its buffers' memory back to the system
                await asyncio.to_thread(HOST.malloc_trim)
                if not self._pinned:
                    self._idle.set()
            log.info(
                "pull finished",
                extra=fields(ref=str(ref), outcome=outcome, seconds=round(time.monotonic() - started, 3)),
            )

    async def _pull(self, ref: Reference, credentials: Credentials, progress: Progress, pinned: set[str]) -> str:
        if (ref.tagged_name if not ref.digest else str(ref)) not in self.meta.names:
            self.zygote.warm()  # a new image: its layers' processes start while it resolves
        hosts = load_hosts(self.config.images.registry_config_dir, ref.domain)
        repo = Repository(self._http(), hosts, ref.domain, ref.path, credentials, self.tokens)
        got = await resolve(repo, ref, self.content, progress)
        layers = got.layers
        progress.size = got.config_size + sum(lay.size for lay in layers)
        pinned.update(
            [got.config_digest, *got.manifests, *(lay.digest for lay in layers), *(lay.chain_id for lay in layers)]
        )

        for digest, body in got.documents:
            await asyncio.to_thread(self.content.put_bytes, digest, body)  # fsync: off the event loop
        faults.step("PullImage.config_stored")
        await self._unpack_all(repo, layers, progress)

        uid, username = user_of(got.config)
        image = ImageRecord(
            id=got.config_digest,
            manifest_digest=got.manifest_digest,
            manifest_media_type=got.media_type,
            size=got.documents_size + sum(lay.size for lay in layers),  # containerd's Image.Size
            uid=uid,
            username=username,
            chain_ids=[lay.chain_id for lay in layers],
            blobs=[*got.manifests, got.config_digest, *(lay.digest for lay in layers)],
            created_at=now_ns(),
        )
        # name:tag@digest pulls by digest and records only the digest, as containerd does
        tag = "" if ref.digest else ref.tagged_name
        orphans = self.meta.put_image(image, tag, ref.with_digest(got.top_digest))
        faults.step("PullImage.image_recorded")
        for orphan in orphans:
            self.meta.remove_image(orphan)
        return got.config_digest

    # --- layers: a snapshot each, in one pass with the download ---------------------

    def _progress_fn(self, digest: str) -> Callable[[int], None]:
        def report(n: int) -> None:
            DOWNLOADED_BYTES.inc(n)  # once, however many pulls share the download
            for p in self._listeners.get(digest, ()):
                p.got(digest, n)

        return report

    def _snapshot_ready(self, chain_id: str) -> bool:
        snap = self.meta.snapshots.get(chain_id)
        return snap is not None and self.snapshots.exists(snap.num)

    def _lowers(self, layers: list[Layer], i: int) -> list[str]:
        return [self.snapshots.path(self.meta.snapshots[lay.chain_id].num) for lay in reversed(layers[:i])]

    async def _unpack_all(self, repo: Repository, layers: list[Layer], progress: Progress) -> None:
        """All layers at once, each into a snapshot of its own (they hold only their own
        diff, so they are independent); only the commits follow the chain."""
        limit = asyncio.Semaphore(self.config.images.max_concurrent_downloads)
        sources = []
        for layer in layers:
            source = "snapshot" if self._snapshot_ready(layer.chain_id) else "content_store"
            if source == "content_store" and not self.content.exists(layer.digest):
                source = "registry"
            else:
                SKIPPED_BYTES.inc(layer.size)
                progress.tick(layer.size)
            LAYERS.labels(source).inc()
            sources.append(source)
        jobs = [
            asyncio.ensure_future(self._layer(repo, layers, i, limit, progress, sources[i] == "registry"))
            for i in range(len(layers))
        ]
        try:
            for job in jobs:  # in chain order: the lowest failing layer is the one reported
                await job
        finally:
            pending = [t for t in jobs if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
            for t in jobs:  # failures after the first one are not news
                if not t.cancelled():
                    t.exception()

    async def _layer(
        self, repo: Repository, layers: list[Layer], i: int, limit: asyncio.Semaphore, progress: Progress, fetch: bool
    ) -> None:
        layer = layers[i]
        if fetch:  # this pull's progress follows the download, whichever pull started it
            self._listeners.setdefault(layer.digest, set()).add(progress)
        try:
            await self._unpacks.run(layer.chain_id, lambda: self._snapshot(repo, layers, i, limit, progress))
            if fetch:
                progress.have(layer.digest, layer.size)
        finally:
            listeners = self._listeners.get(layer.digest)
            if fetch and listeners is not None:
                listeners.discard(progress)
                if not listeners:
                    del self._listeners[layer.digest]

    async def _snapshot(
        self, repo: Repository, layers: list[Layer], i: int, limit: asyncio.Semaphore, progress: Progress
    ) -> None:
        """Make layer ``i``'s snapshot (shared by the pulls that need it: ``_unpacks``)."""
        layer = layers[i]
        if self._snapshot_ready(layer.chain_id):
            return
        below: asyncio.Future[None] | None = None
        if i and not self._snapshot_ready(layers[i - 1].chain_id):
            # the layer below is made by its own task, joined here (it runs meanwhile); this one
            # is unpacked without it, deferred, and finished once it is committed
            below = asyncio.ensure_future(
                self._unpacks.run(layers[i - 1].chain_id, lambda: self._snapshot(repo, layers, i - 1, limit, progress))
            )
        tmp = self.snapshots.new_tmp()
        job = _Unpack(repo, layer, os.path.join(tmp, "fs"), limit, progress)
        started = time.monotonic()
        try:
            try:
                applied: Applied | None = await self._extract(job, None if below else self._lowers(layers, i))
            except NeedsLowers:
                if below is None:
                    raise
                applied = None  # unpacked again below, on top of its lowers
            if below is not None:
                await below
                applied = await self._finish(job, applied, self._lowers(layers, i))
            assert applied is not None
        except BaseException:
            for stop in job.stops:
                stop()
            if job.work:
                await asyncio.wait(job.work)
            await asyncio.get_running_loop().run_in_executor(None, shutil.rmtree, tmp, True)
            raise
        finally:
            if below is not None and not below.done():
                below.cancel()
                await asyncio.wait({below})
            if below is not None and not below.cancelled():
                below.exception()
        stats = applied.stats
        log.debug(
            "layer unpacked",
            extra=fields(digest=layer.digest, files=stats.inodes, seconds=round(time.monotonic() - started, 3)),
        )
        num = self.meta.next_snapshot_num()
        self.snapshots.commit(tmp, num)
        faults.step("PullImage.snapshot_committed")
        parent = layers[i - 1].chain_id if i else None
        self.meta.put_snapshot(SnapshotRecord(layer.chain_id, num, parent, layer.diff_id, stats.bytes, stats.inodes))
        faults.step("PullImage.snapshot_recorded")

    async def _extract(self, job: _Unpack, lowers: list[str] | None) -> Applied:
        """Unpack the layer while it downloads or, when its blob is in the content store (or
        another download of it was under way), from the file."""
        if not self.content.exists(job.layer.digest):
            applied = await self._stream(job, lowers)
            if applied is not None:
                return applied
        return await self._from_file(job, lowers)

    def _job(self, job: _Unpack, lowers: list[str] | None, download: bool) -> Job:
        """What a layer's own process is to do (cri/images/layer_child.py)."""
        layer, repo = job.layer, job.repo
        fetch = None
        if download:
            timeout = self.config.images.pull_progress_timeout_seconds
            fetch = Download(repo.registry, repo.path, repo.hosts, repo.credentials, repo.auth, timeout)
        unpack = Unpack(job.target, lowers, layer.diff_id)
        return Job(self.content.store_root, layer.digest, layer.size, layer.compression, fetch, unpack)

    async def _stream(self, job: _Unpack, lowers: list[str] | None) -> Applied | None:
        """Download the blob into the content store, unpacking it in the same pass; None when
        the download joined (one of another chain with the same blob) did not unpack it."""
        layer, limit, progress = job.layer, job.limit, job.progress
        outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        attach = [self._job(job, lowers, download=True)]  # taken by the download this call starts

        async def download() -> None:
            held: asyncio.Semaphore | None = limit
            await limit.acquire()
            started = time.monotonic()
            busy = 0

            def downloaded() -> None:  # the next layer's download starts during this one's tail
                nonlocal held, busy
                limit.release()
                held = None
                busy = 1
                progress.busy += 1  # the unpack of the last bytes, the fsync

            try:
                if self.content.exists(layer.digest):
                    return
                child = await LayerProcess.start(self.zygote, attach.pop(), f"blob {layer.digest}")
                job.work.append(outcome)
                job.stops.append(child.stop_unpack)
                try:
                    blob_error, unpacked = await child.outcome(self._progress_fn(layer.digest), downloaded)
                except BaseException:
                    await child.terminate()  # it has removed its ingest file, unless it was killed
                    self.content.discard_ingest(layer.digest)
                    raise
                finally:
                    progress.busy -= busy
                outcome.set_result(unpacked)
                if blob_error is not None:
                    raise blob_error
                faults.step("PullImage.layer_fetched")
            finally:
                if not outcome.done():
                    outcome.set_result(Cancelled())
                if held is not None:
                    held.release()
                log.debug(
                    "blob fetched",
                    extra=fields(digest=layer.digest, bytes=layer.size, seconds=round(time.monotonic() - started, 3)),
                )

        await self._blobs.run(layer.digest, download)
        if attach:
            return None
        return as_applied(await asyncio.shield(outcome))

    async def _from_file(self, job: _Unpack, lowers: list[str] | None) -> Applied:
        async with self._unpack_slots:
            child = await LayerProcess.start(
                self.zygote, self._job(job, lowers, download=False), f"layer {job.layer.digest}"
            )
            job.stops.append(child.stop_unpack)
            _, unpacked = await job.busy(asyncio.ensure_future(child.outcome()))
        return as_applied(unpacked)

    async def _finish(self, job: _Unpack, applied: Applied | None, lowers: list[str]) -> Applied:
        """The lower layers are committed: apply what was deferred, or unpack the layer
        again on top of them where deferring could not give the same tree."""
        if applied is not None:
            try:
                await job.busy(in_thread(lambda: applied.finish(lowers), "crid-unpack"))
                return applied
            except NeedsLowers:
                pass
        log.debug("layer unpacked again on top of its lowers", extra=fields(digest=job.layer.digest))
        await job.busy(in_thread(lambda: _empty(job.target), "crid-unpack"))
        return await self._from_file(job, lowers)


@dataclass
class _Unpack:
    """One layer's unpack into a tmp snapshot dir, and what stops it."""

    repo: Repository
    layer: Layer
    target: str
    limit: asyncio.Semaphore  # the pull's downloads at once
    progress: Progress
    stops: list[Callable[[], None]] = field(default_factory=list)  # what stops the work writing into target
    # the processes and threads writing into target: they end before it goes
    work: list[asyncio.Future[Any]] = field(default_factory=list)

    async def busy(self, task: asyncio.Future[T]) -> T:
        """Wait for a task that makes no byte progress (the watchdog waits too)."""
        task.add_done_callback(lambda f: f.cancelled() or f.exception())
        self.work.append(task)
        self.progress.busy += 1
        try:
            return await asyncio.shield(task)
        finally:
            self.progress.busy -= 1
            self.progress.tick()


def _empty(target: str) -> None:
    """An unpack's directory made empty again."""
    shutil.rmtree(target)
    os.mkdir(target, 0o755)
