"""Image records in the state store, mirrored in memory for reads.

An image is identified by its config digest. Names point at images: repo
tags (``name:tag``) and repo digests (``name@sha256:...``). A name is moved
when a tag is pulled anew; an image with no names left is removed.
Snapshots map a chain id to its directory number.
"""

import json
import time
from dataclasses import dataclass, field

from cri.store import Store

MIGRATIONS = [
    """
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        manifest_digest TEXT NOT NULL,
        manifest_media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        uid INTEGER,
        username TEXT NOT NULL,
        pinned INTEGER NOT NULL DEFAULT 0,
        chain_ids TEXT NOT NULL,
        blobs TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE image_names (
        name TEXT PRIMARY KEY,
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('tag', 'digest'))
    );
    CREATE TABLE snapshots (
        chain_id TEXT PRIMARY KEY,
        num INTEGER UNIQUE NOT NULL,
        parent TEXT,
        diff_id TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        inodes INTEGER NOT NULL
    )
    """,
]


@dataclass
class ImageRecord:
    id: str
    manifest_digest: str
    manifest_media_type: str
    size: int
    uid: int | None
    username: str
    chain_ids: list[str]
    blobs: list[str]
    created_at: int
    pinned: bool = False
    tags: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class SnapshotRecord:
    chain_id: str
    num: int
    parent: str | None
    diff_id: str
    bytes: int
    inodes: int


class ImageMetadata:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("images", MIGRATIONS)
        self.images: dict[str, ImageRecord] = {}
        self.names: dict[str, str] = {}  # name -> image id
        self.snapshots: dict[str, SnapshotRecord] = {}
        self._load()

    def _load(self) -> None:
        db = self.store.db
        for r in db.execute("SELECT * FROM images"):
            self.images[r["id"]] = ImageRecord(
                id=r["id"],
                manifest_digest=r["manifest_digest"],
                manifest_media_type=r["manifest_media_type"],
                size=r["size"],
                uid=r["uid"],
                username=r["username"],
                chain_ids=json.loads(r["chain_ids"]),
                blobs=json.loads(r["blobs"]),
                created_at=r["created_at"],
                pinned=bool(r["pinned"]),
            )
        for r in db.execute("SELECT name, image_id, kind FROM image_names ORDER BY rowid"):
            self._attach(r["name"], r["image_id"], r["kind"])
        for r in db.execute("SELECT * FROM snapshots"):
            self.snapshots[r["chain_id"]] = SnapshotRecord(**dict(r))

    def _attach(self, name: str, image_id: str, kind: str) -> None:
        self.names[name] = image_id
        image = self.images[image_id]
        (image.tags if kind == "tag" else image.digests).append(name)

    def _detach(self, name: str) -> str | None:
        image_id = self.names.pop(name, None)
        if image_id is not None:
            image = self.images[image_id]
            for names in (image.tags, image.digests):
                if name in names:
                    names.remove(name)
        return image_id

    # --- images --------------------------------------------------------------

    def put_image(self, image: ImageRecord, tag: str, digest_name: str) -> list[str]:
        """Record ``image`` (if new) under ``tag`` (may be empty) and its repo
        digest name. Returns ids of other images left without any name."""
        orphans: list[str] = []
        with self.store.tx() as db:
            if image.id not in self.images:
                db.execute(
                    "INSERT INTO images VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (image.id, image.manifest_digest, image.manifest_media_type, image.size, image.uid,
                     image.username, int(image.pinned), json.dumps(image.chain_ids), json.dumps(image.blobs),
                     image.created_at),
                )  # fmt: skip
            for name, kind in ((tag, "tag"), (digest_name, "digest")):
                if not name:
                    continue
                previous = self.names.get(name)
                if previous == image.id:
                    continue
                db.execute("INSERT OR REPLACE INTO image_names VALUES (?, ?, ?)", (name, image.id, kind))
                if previous is not None:
                    orphans.append(previous)
        self.images.setdefault(image.id, image)
        for name, kind in ((tag, "tag"), (digest_name, "digest")):
            if name and self.names.get(name) != image.id:
                self._detach(name)
                self._attach(name, image.id, kind)
        return [o for o in orphans if o in self.images and not self.names_of(o)]

    def names_of(self, image_id: str) -> list[str]:
        image = self.images[image_id]
        return image.tags + image.digests

    def remove_image(self, image_id: str) -> None:
        with self.store.tx() as db:
            db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        image = self.images.pop(image_id, None)
        if image is not None:
            for name in image.tags + image.digests:
                self.names.pop(name, None)

    # --- snapshots -----------------------------------------------------------

    def next_snapshot_num(self) -> int:
        return max((s.num for s in self.snapshots.values()), default=0) + 1

    def put_snapshot(self, snap: SnapshotRecord) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
                (snap.chain_id, snap.num, snap.parent, snap.diff_id, snap.bytes, snap.inodes),
            )
        self.snapshots[snap.chain_id] = snap

    def remove_snapshot(self, chain_id: str) -> None:
        with self.store.tx() as db:
            db.execute("DELETE FROM snapshots WHERE chain_id = ?", (chain_id,))
        self.snapshots.pop(chain_id, None)


def now_ns() -> int:
    return time.time_ns()
