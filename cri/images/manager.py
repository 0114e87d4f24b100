"""Images: the store's façade: look up, list, remove, garbage-collect, disk usage.

Pulling is in cri/images/pull.py; this module owns what a pull leaves behind
(the content store, the snapshots and their records) and keeps what pulls in
flight hold when it collects garbage.
"""

import asyncio
import contextlib
import logging
import os
import re
import shutil
from collections.abc import Callable
from typing import TYPE_CHECKING

from cri.config import Config
from cri.errors import CridError
from cri.images import pull_metrics  # noqa: F401  (its metrics are shown from the start)
from cri.images.auth import Credentials
from cri.images.content import ContentStore
from cri.images.manifest import ImageConfig, image_config
from cri.images.metadata import ImageMetadata, ImageRecord
from cri.images.reference import HEX64_RE, SHA256_RE, parse
from cri.images.snapshots import Snapshots
from cri.log import fields
from cri.store import Store

if TYPE_CHECKING:
    from cri.images.http import Session
    from cri.images.pull import Puller

log = logging.getLogger(__name__)

_HEX_PREFIX = re.compile(r"^(?:sha256:)?[a-f0-9]{1,64}$")


class Images:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.content = ContentStore(config.root_dir)
        self.snapshots = Snapshots(config.root_dir)
        self.meta = ImageMetadata(store)
        self._session: Session | None = None
        self._puller: Puller | None = None
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
        if self._puller is not None:
            await self._puller.drain(seconds)

    async def close(self) -> None:
        if self._puller is not None:
            await self._puller.zygote.stop()
        if self._session is not None:
            await self._session.close()

    @property
    def puller(self) -> "Puller":
        # the pull's machinery (the registry client on h11, the layer processes, tar) is imported at
        # the first pull: a daemon that has pulled nothing does not keep it (1.2 MiB of RSS)
        if self._puller is None:
            from cri.images.pull import Puller

            self._puller = Puller(self.config, self.content, self.snapshots, self.meta, self._http, self.gc)
        return self._puller

    def _http(self) -> "Session":
        if self._session is None:
            from cri.images.http import Session

            self._session = Session(self.config.images.pull_progress_timeout_seconds)
        return self._session

    async def pull(self, text: str, credentials: Credentials) -> str:
        """Pull ``text``; returns the image id (cri/images/pull.py)."""
        return await self.puller.pull(text, credentials)

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

    def config_of(self, image: ImageRecord) -> ImageConfig:
        return image_config(self.content.read(image.id), f"config {image.id}")

    def snapshot_dirs(self, image: ImageRecord) -> list[str]:
        """The image's layer directories, top-most first."""
        return [self.snapshots.path(self.meta.snapshots[c].num) for c in reversed(image.chain_ids)]

    def layer_dirs(self, chain_ids: list[str]) -> list[str]:
        """The snapshot dirs of a container's layers, top first (its image may be gone: they are kept)."""
        snaps = self.meta.snapshots
        return [self.snapshots.path(snaps[c].num) for c in reversed(chain_ids) if c in snaps]

    def mount_rootfs(self, image: ImageRecord, target: str, upper: str, work: str) -> None:
        """Mount the image's layers with a writable upper dir at ``target`` (blocking)."""
        nums = [self.meta.snapshots[c].num for c in reversed(image.chain_ids)]
        self.snapshots.mount_overlay(nums, target, upper, work)

    def mount_readonly(self, image: ImageRecord, target: str) -> None:
        """Mount the image's layers read-only at ``target`` (an image volume; blocking)."""
        self.snapshots.mount_overlay([self.meta.snapshots[c].num for c in reversed(image.chain_ids)], target)

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
        keep = (self._puller.held() if self._puller is not None else set()) | self.snapshots_in_use()
        for image in self.meta.images.values():
            keep.update(image.blobs)
            keep.update(image.chain_ids)
        # taken out right here (renames), deleted in a thread: a pull starting meanwhile must not
        # find a blob or snapshot that vanishes, and the event loop must not wait for the disk
        blobs = [moved for d in list(self.content.digests()) if d not in keep and (moved := self.content.detach(d))]
        doomed = []
        for snap in list(self.meta.snapshots.values()):
            if snap.chain_id not in keep:
                self.meta.remove_snapshot(snap.chain_id)
                doomed.append(self.snapshots.detach(snap.num))
        if blobs:
            await asyncio.to_thread(_unlink_all, blobs)
        loop = asyncio.get_running_loop()
        for path in doomed:  # big trees
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


def _unlink_all(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
