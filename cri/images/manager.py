"""Images: pull, list, look up, remove, garbage-collect, and disk usage.

A pull resolves the reference through the configured hosts, picks the host
platform from an index, verifies every manifest, config and layer against
its digest and size, stores blobs in the content store and unpacks each
layer once into a snapshot keyed by its chain id; only then is the image
recorded. Blob downloads and unpacks are shared between concurrent pulls.
"""

from __future__ import annotations  # aiohttp and the registry client are imported at the first pull

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cri.config import Config
from cri.errors import CridError, FailedPrecondition, Unavailable
from cri.images import mediatypes as mt
from cri.images.auth import Credentials, TokenCache
from cri.images.content import ContentStore, verify_bytes
from cri.images.hosts import load_hosts
from cri.images.manifest import Layer, descriptor, json_object, layers_of, pick_platform, user_of
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
from cri.images.reference import HEX64_RE, SHA256_RE, Reference, parse
from cri.images.shared import SharedTasks
from cri.images.snapshots import Snapshots
from cri.images.unpack import LayerStats, apply_layer
from cri.log import fields
from cri.store import Store

if TYPE_CHECKING:  # aiohttp is 9 MiB of a daemon that may never pull
    import aiohttp

    from cri.images.registry import Repository

log = logging.getLogger(__name__)

CONFIG_MAX_BYTES = 8 * 1024 * 1024
_LIBC = ctypes.CDLL(None)
_HEX_PREFIX = re.compile(r"^(?:sha256:)?[a-f0-9]{1,64}$")


class Images:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.content = ContentStore(config.root_dir)
        self.snapshots = Snapshots(config.root_dir)
        self.meta = ImageMetadata(store)
        self.tokens = TokenCache()
        self._session: aiohttp.ClientSession | None = None
        self._blobs: SharedTasks[None] = SharedTasks()
        self._unpacks: SharedTasks[None] = SharedTasks()
        self._listeners: dict[str, set[Progress]] = {}
        self._pinned: list[set[str]] = []  # blobs and chain ids that in-flight pulls hold
        self._idle = asyncio.Event()  # set while no pull is in flight
        self._idle.set()
        # chain ids in use by containers; the containers layer installs this
        self.snapshots_in_use: Callable[[], set[str]] = set

    # --- lifecycle -----------------------------------------------------------

    async def recover(self) -> None:
        """Drop what a killed daemon left half done: ingest files, unpacks in
        progress, snapshot dirs or rows without their counterpart. The files
        are dealt with in a thread, the rows here: the database is used from
        the event loop's thread only."""
        rows = {s.chain_id: s.num for s in self.meta.snapshots.values()}
        lost = await asyncio.to_thread(self._recover_files, rows)
        for chain_id in lost:
            log.warning("snapshot directory missing; dropping its record", extra=fields(chain_id=chain_id))
            self.meta.remove_snapshot(chain_id)

    def _recover_files(self, rows: dict[str, int]) -> list[str]:
        """Clears half-done files; returns the chain ids whose directory is gone."""
        self.content.clear_ingest()
        self.snapshots.clear_tmp()
        for num in set(self.snapshots.numbers()) - set(rows.values()):
            self.snapshots.remove(num)
        return [chain_id for chain_id, num in rows.items() if not self.snapshots.exists(num)]

    async def drain(self, seconds: float) -> None:
        """At shutdown: wait (bounded) for cancelled pulls to clean up after themselves."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), seconds)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            import aiohttp

            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=30, sock_read=self.config.images.pull_progress_timeout_seconds
            )
            self._session = aiohttp.ClientSession(
                timeout=timeout,
                connector=aiohttp.TCPConnector(limit=64),
                headers={"User-Agent": "crid"},
                trust_env=False,
                auto_decompress=False,
            )
        return self._session

    # --- pulling ---------------------------------------------------------------

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
                await self.gc()
            if not self._pinned:  # the last pull is done: give its buffers' memory back to the system
                await asyncio.to_thread(_LIBC.malloc_trim, 0)
                if not self._pinned:
                    self._idle.set()
            log.info(
                "pull finished",
                extra=fields(ref=str(ref), outcome=outcome, seconds=round(time.monotonic() - started, 3)),
            )

    async def _pull(self, ref: Reference, credentials: Credentials, progress: Progress, pinned: set[str]) -> str:
        from cri.images.registry import Repository

        hosts = load_hosts(self.config.images.registry_config_dir, ref.domain)
        repo = Repository(self._http(), hosts, ref.domain, ref.path, credentials, self.tokens)
        top = await repo.manifest(ref.object, mt.MANIFEST_ACCEPT, resolve=not ref.digest)
        DOWNLOADED_BYTES.inc(len(top.body))
        progress.tick()
        top_digest = "sha256:" + hashlib.sha256(top.body).hexdigest()
        if ref.digest and top_digest != ref.digest:
            raise FailedPrecondition(f"manifest {ref.digest}: digest mismatch: content hashes to {top_digest}")
        doc = json_object(top.body, f"manifest of {ref}")
        media_type = str(doc.get("mediaType") or top.media_type)
        if media_type in mt.SCHEMA1 or doc.get("schemaVersion") == 1:
            raise FailedPrecondition(
                f"{ref} is a Docker schema 1 image, which crid does not support; push it again with a "
                "current tool (docker, buildah, skopeo) to get a schema 2 or OCI manifest"
            )
        blobs = [top_digest]
        manifest_body, manifest_digest = top.body, top_digest
        if media_type in mt.INDEXES or (not media_type and "manifests" in doc):
            digest, size, media_type = pick_platform(doc, str(ref))
            child = await repo.manifest(digest, mt.MANIFEST_ACCEPT, resolve=False, size=size)
            DOWNLOADED_BYTES.inc(len(child.body))
            progress.tick()
            verify_bytes(child.body, digest, size, "manifest")
            manifest_body, manifest_digest = child.body, digest
            doc = json_object(child.body, f"manifest {digest}")
            media_type = str(doc.get("mediaType") or media_type or child.media_type)
            blobs.append(digest)
        if media_type not in mt.MANIFESTS and not (not media_type and "layers" in doc):
            raise FailedPrecondition(f"{ref}: unsupported manifest media type {media_type!r}")

        config_digest, config_size, config_media = descriptor(doc.get("config"), f"config of {ref}")
        if config_media not in mt.CONFIGS:
            raise FailedPrecondition(f"{ref} is not a container image: its config has media type {config_media!r}")
        if config_size > CONFIG_MAX_BYTES:
            raise FailedPrecondition(f"config {config_digest} is {config_size} bytes, over the limit")
        if self.content.exists(config_digest):
            config_body = self.content.read(config_digest)
            SKIPPED_BYTES.inc(config_size)
        else:
            config_body = await repo.blob_bytes(config_digest, config_size, CONFIG_MAX_BYTES)
            DOWNLOADED_BYTES.inc(len(config_body))
        progress.tick(len(config_body))
        verify_bytes(config_body, config_digest, config_size, "config")
        config = json_object(config_body, f"config {config_digest}")
        layers = layers_of(doc, config, str(ref))
        progress.size = config_size + sum(lay.size for lay in layers)
        pinned.update([config_digest, *blobs, *(lay.digest for lay in layers), *(lay.chain_id for lay in layers)])

        for digest, body in ((top_digest, top.body), (manifest_digest, manifest_body), (config_digest, config_body)):
            await asyncio.to_thread(self.content.put_bytes, digest, body)  # fsync: off the event loop
        await self._unpack_all(repo, layers, progress)

        uid, username = user_of(config)
        image = ImageRecord(
            id=config_digest,
            manifest_digest=manifest_digest,
            manifest_media_type=media_type,
            # containerd's Image.Size (kubelet's image GC counts it): every blob the platform's
            # walk reaches, the index included, without the index's other manifests
            size=sum(len(body) for body in {top_digest: top.body, manifest_digest: manifest_body}.values())
            + config_size
            + sum(lay.size for lay in layers),
            uid=uid,
            username=username,
            chain_ids=[lay.chain_id for lay in layers],
            blobs=[*blobs, config_digest, *(lay.digest for lay in layers)],
            created_at=now_ns(),
        )
        # name:tag@digest pulls by digest and records only the digest, as containerd does
        tag = "" if ref.digest else ref.tagged_name
        orphans = self.meta.put_image(image, tag, ref.with_digest(top_digest))
        for orphan in orphans:
            self.meta.remove_image(orphan)
        return config_digest

    # --- blobs and snapshots ------------------------------------------------------

    def _progress_fn(self, digest: str) -> Callable[[int], None]:
        def report(n: int) -> None:
            DOWNLOADED_BYTES.inc(n)  # once, however many pulls share the download
            for p in self._listeners.get(digest, ()):
                p.got(digest, n)

        return report

    async def _fetch(self, repo: Repository, layer: Layer, limit: asyncio.Semaphore, progress: Progress) -> None:
        if self.content.exists(layer.digest):
            progress.have(layer.digest, layer.size)
            return
        self._listeners.setdefault(layer.digest, set()).add(progress)

        async def download() -> None:
            async with limit:
                if self.content.exists(layer.digest):
                    return
                ingest = self.content.writer(layer.digest, layer.size)
                started = time.monotonic()
                try:
                    await repo.blob(layer.digest, layer.size, ingest, self._progress_fn(layer.digest))
                    await ingest.commit()
                finally:
                    ingest.discard()
                log.debug(
                    "blob fetched",
                    extra=fields(digest=layer.digest, bytes=layer.size, seconds=round(time.monotonic() - started, 3)),
                )

        try:
            await self._blobs.run(layer.digest, download)
            progress.have(layer.digest, layer.size)
        finally:
            listeners = self._listeners.get(layer.digest)
            if listeners is not None:
                listeners.discard(progress)
                if not listeners:
                    del self._listeners[layer.digest]

    def _snapshot_ready(self, chain_id: str) -> bool:
        snap = self.meta.snapshots.get(chain_id)
        return snap is not None and self.snapshots.exists(snap.num)

    async def _unpack(self, layers: list[Layer], i: int, progress: Progress) -> None:
        layer = layers[i]
        loop = asyncio.get_running_loop()

        async def unpack() -> None:
            if self._snapshot_ready(layer.chain_id):
                return
            lowers = [self.snapshots.path(self.meta.snapshots[lay.chain_id].num) for lay in reversed(layers[:i])]
            tmp = self.snapshots.new_tmp()
            cancel = threading.Event()
            work = loop.run_in_executor(
                None,
                apply_layer,
                self.content.path(layer.digest),
                layer.compression,
                os.path.join(tmp, "fs"),
                lowers,
                layer.diff_id,
                cancel,
            )
            progress.busy += 1
            started = time.monotonic()
            try:
                stats: LayerStats = await asyncio.shield(work)
            except BaseException:
                cancel.set()
                await asyncio.wait({work})  # the thread must stop writing before its dir goes
                await loop.run_in_executor(None, shutil.rmtree, tmp, True)
                raise
            finally:
                progress.busy -= 1
                progress.tick()
            log.debug(
                "layer unpacked",
                extra=fields(digest=layer.digest, files=stats.inodes, seconds=round(time.monotonic() - started, 3)),
            )
            num = self.meta.next_snapshot_num()
            self.snapshots.commit(tmp, num)
            parent = layers[i - 1].chain_id if i else None
            self.meta.put_snapshot(
                SnapshotRecord(layer.chain_id, num, parent, layer.diff_id, stats.bytes, stats.inodes)
            )

        await self._unpacks.run(layer.chain_id, unpack)

    async def _unpack_all(self, repo: Repository, layers: list[Layer], progress: Progress) -> None:
        limit = asyncio.Semaphore(self.config.images.max_concurrent_downloads)
        fetches: dict[int, asyncio.Task[None]] = {}
        for i, layer in enumerate(layers):
            source = "snapshot" if self._snapshot_ready(layer.chain_id) else "content_store"
            if source == "content_store" and not self.content.exists(layer.digest):
                source = "registry"
                fetches[i] = asyncio.ensure_future(self._fetch(repo, layer, limit, progress))
            else:
                SKIPPED_BYTES.inc(layer.size)
                progress.tick(layer.size)
            LAYERS.labels(source).inc()
        try:
            for i in range(len(layers)):
                if i in fetches:
                    await fetches[i]
                await self._unpack(layers, i, progress)
        finally:
            pending = [t for t in fetches.values() if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending)
            for t in fetches.values():  # failures after the first one are not news
                if not t.cancelled():
                    t.exception()

    # --- reading --------------------------------------------------------------

    def find(self, text: str) -> ImageRecord | None:
        """An image by id, id prefix, repo tag, repo digest or short name."""
        if not text:
            return None
        if SHA256_RE.match(text):
            return self.meta.images.get(text)
        if HEX64_RE.match(text):
            return self.meta.images.get("sha256:" + text)
        try:
            ref = parse(text)
        except CridError:
            ref = None
        if ref is not None:
            name = ref.with_digest(ref.digest) if ref.digest else ref.tagged_name
            image_id = self.meta.names.get(name)
            if image_id is not None:
                return self.meta.images.get(image_id)
        if _HEX_PREFIX.match(text):
            prefix = text if text.startswith("sha256:") else "sha256:" + text
            matches = [img for iid, img in self.meta.images.items() if iid.startswith(prefix)]
            if len(matches) == 1:
                return matches[0]
        return None

    def all(self) -> list[ImageRecord]:
        return list(self.meta.images.values())

    def config_of(self, image: ImageRecord) -> dict[str, Any]:
        return json_object(self.content.read(image.id), f"config {image.id}")

    def snapshot_dirs(self, image: ImageRecord) -> list[str]:
        """The image's layer directories, top-most first."""
        return [self.snapshots.path(self.meta.snapshots[c].num) for c in reversed(image.chain_ids)]

    def mount_rootfs(self, image: ImageRecord, target: str, upper: str, work: str) -> None:
        """Mount the image's layers with a writable upper dir at ``target`` (blocking)."""
        nums = [self.meta.snapshots[c].num for c in reversed(image.chain_ids)]
        self.snapshots.mount_overlay(nums, target, upper, work)

    async def remove(self, text: str) -> None:
        """Remove the image and all its names; unknown images are fine."""
        image = self.find(text)
        if image is None:
            return
        self.meta.remove_image(image.id)
        log.info("image removed", extra=fields(id=image.id, names=image.tags + image.digests))
        await self.gc()

    # --- garbage collection and usage -------------------------------------------

    async def gc(self) -> None:
        """Delete blobs and snapshots that no image, container or running pull uses."""
        keep: set[str] = set().union(*self._pinned) if self._pinned else set()
        keep |= self._blobs.running() | self._unpacks.running() | self.snapshots_in_use()
        for image in self.meta.images.values():
            keep.update(image.blobs)
            keep.update(image.chain_ids)
        # unlinked right here, not in a thread: a pull starting meanwhile must not find a blob that vanishes
        for digest in list(self.content.digests()):
            if digest not in keep:
                self.content.delete(digest)
        doomed = []
        for snap in list(self.meta.snapshots.values()):
            if snap.chain_id not in keep:
                self.meta.remove_snapshot(snap.chain_id)
                doomed.append(self.snapshots.detach(snap.num))
        loop = asyncio.get_running_loop()
        for path in doomed:  # big trees: deleted off the event loop
            await loop.run_in_executor(None, shutil.rmtree, path, True)

    async def usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by blobs and snapshots: the snapshot rows are
        summed here (a pull may change them), the blobs stat'ed in a thread."""
        used = sum(snap.bytes for snap in self.meta.snapshots.values())
        inodes = sum(snap.inodes for snap in self.meta.snapshots.values())
        blob_bytes, blobs = await asyncio.to_thread(self._blob_usage)
        return used + blob_bytes, inodes + blobs

    def _blob_usage(self) -> tuple[int, int]:
        used = count = 0
        for digest in self.content.digests():
            try:
                used += self.content.size(digest)
                count += 1
            except FileNotFoundError:
                continue
        return used, count
