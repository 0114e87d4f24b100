"""A pull's documents: from a reference to the manifest, the config and the layers.

The top manifest is fetched by tag or digest and checked against the digest
the reference names; an index is narrowed to the host platform's manifest;
the config comes from the content store when it is there, else from the
registry, within a size limit. Every document is verified against its
descriptor before it is parsed. Nothing is stored here: the puller commits
the documents once it holds what they name.
"""

from __future__ import annotations  # the registry client is imported at the first pull

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cri.errors import FailedPrecondition
from cri.images import mediatypes as mt
from cri.images.content import ContentStore, verify_bytes
from cri.images.manifest import ImageConfig, Layer, descriptor, image_config, json_object, layers_of, pick_platform
from cri.images.pull_metrics import DOWNLOADED_BYTES, SKIPPED_BYTES, Progress
from cri.images.reference import Reference

if TYPE_CHECKING:
    from cri.images.registry import Repository

CONFIG_MAX_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Resolved:
    top_digest: str  # what the reference resolved to: an index or a manifest
    top_body: bytes
    manifest_digest: str  # the platform's manifest (the top one if that is no index)
    manifest_body: bytes
    media_type: str  # the manifest's
    config_digest: str  # the image id
    config_size: int
    config_body: bytes
    config: ImageConfig
    layers: list[Layer]

    @property
    def manifests(self) -> list[str]:
        """The manifest digests, the top one first (once if it is the platform's)."""
        return list(dict.fromkeys((self.top_digest, self.manifest_digest)))

    @property
    def documents_size(self) -> int:
        """The documents' part of containerd's Image.Size (kubelet's image GC counts it): every
        blob the platform's walk reaches, the index included, without the index's other manifests."""
        bodies = {self.top_digest: self.top_body, self.manifest_digest: self.manifest_body}
        return sum(len(body) for body in bodies.values()) + self.config_size

    @property
    def documents(self) -> list[tuple[str, bytes]]:
        """(digest, body) of each document, to commit to the content store."""
        return [
            (self.top_digest, self.top_body),
            (self.manifest_digest, self.manifest_body),
            (self.config_digest, self.config_body),
        ]


async def resolve(repo: Repository, ref: Reference, content: ContentStore, progress: Progress) -> Resolved:
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
    if media_type not in mt.MANIFESTS and not (not media_type and "layers" in doc):
        raise FailedPrecondition(f"{ref}: unsupported manifest media type {media_type!r}")

    config_digest, config_size, config_media = descriptor(doc.get("config"), f"config of {ref}")
    if config_media not in mt.CONFIGS:
        raise FailedPrecondition(f"{ref} is not a container image: its config has media type {config_media!r}")
    if config_size > CONFIG_MAX_BYTES:
        raise FailedPrecondition(f"config {config_digest} is {config_size} bytes, over the limit")
    if content.exists(config_digest):
        config_body = content.read(config_digest)
        SKIPPED_BYTES.inc(config_size)
    else:
        config_body = await repo.blob_bytes(config_digest, config_size, CONFIG_MAX_BYTES)
        DOWNLOADED_BYTES.inc(len(config_body))
    progress.tick(len(config_body))
    verify_bytes(config_body, config_digest, config_size, "config")
    config = image_config(config_body, f"config {config_digest}")
    layers = layers_of(doc, config, str(ref))
    return Resolved(
        top_digest=top_digest,
        top_body=top.body,
        manifest_digest=manifest_digest,
        manifest_body=manifest_body,
        media_type=media_type,
        config_digest=config_digest,
        config_size=config_size,
        config_body=config_body,
        config=config,
        layers=layers,
    )
