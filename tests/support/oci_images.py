"""OCI and Docker schema 2 images in code: a :class:`Layer` (tar entries plus a compression), an
:class:`Image` (layers plus an :class:`ImageConfig`; it renders the config blob and an OCI manifest
or, with ``docker=True``, a Docker schema 2 one), an :class:`Index` (an OCI index or a Docker
manifest list). Same input, same digests.
"""

import functools
import hashlib
import io
import json
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tests.support.oci_tar import Compression, Entry, build_tar, compress

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"

OCI_LAYER_TYPES: dict[str, str] = {"none": OCI_LAYER, "gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD}
DOCKER_LAYER_TYPES: dict[str, str] = {
    "none": DOCKER_LAYER,
    "gzip": DOCKER_LAYER_GZIP,
    "zstd": DOCKER_LAYER_ZSTD,
}

# all manifests kinds a client may be sent, best first
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

CREATED = "2024-01-01T00:00:00Z"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj: Any) -> bytes:
    """The bytes a config or manifest is pushed as (compact, key order kept)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


class Layer:
    """One layer: entries (or ready tar bytes) plus a compression.

    ``media_type`` overrides the media type of the descriptor (e.g. a
    non-distributable or an unknown type); ``blob`` overrides the compressed
    bytes (e.g. a corrupt stream) while ``diff_id`` stays the tar's.
    """

    def __init__(
        self,
        entries: Sequence[Entry] = (),
        compression: Compression = "gzip",
        *,
        tar: bytes | None = None,
        level: int | None = None,
        media_type: str | None = None,
        blob: bytes | None = None,
        annotations: Mapping[str, str] | None = None,
    ) -> None:
        self.entries = tuple(entries)
        self.compression: Compression = compression
        self._tar = tar
        self._level = level
        self._media_type = media_type
        self._blob = blob
        self.annotations = dict(annotations or {})

    @functools.cached_property
    def tar(self) -> bytes:
        return self._tar if self._tar is not None else build_tar(self.entries)

    @functools.cached_property
    def blob(self) -> bytes:
        return self._blob if self._blob is not None else compress(self.tar, self.compression, self._level)

    @functools.cached_property
    def diff_id(self) -> str:
        return sha256_digest(self.tar)

    @functools.cached_property
    def digest(self) -> str:
        return sha256_digest(self.blob)

    @property
    def size(self) -> int:
        return len(self.blob)

    def media_type(self, docker: bool = False) -> str:
        if self._media_type is not None:
            return self._media_type
        return (DOCKER_LAYER_TYPES if docker else OCI_LAYER_TYPES)[self.compression]

    def descriptor(self, docker: bool = False) -> dict[str, Any]:
        desc: dict[str, Any] = {
            "mediaType": self.media_type(docker),
            "digest": self.digest,
            "size": self.size,
        }
        if self.annotations:
            desc["annotations"] = dict(self.annotations)
        return desc

    def names(self) -> list[str]:
        """The member names of the tar, as stored."""
        with tarfile.open(fileobj=io.BytesIO(self.tar), mode="r:") as tf:
            return tf.getnames()


@dataclass
class ImageConfig:
    """The runtime part of an image config (the ``config`` object); ``None`` / empty = absent."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = field(default_factory=lambda: ["sh"])
    env: list[str] | None = field(default_factory=lambda: [DEFAULT_PATH])
    user: str | None = None
    working_dir: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    exposed_ports: list[str] = field(default_factory=list)  # "80/tcp"
    stop_signal: str | None = None
    volumes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # merged in last, e.g. {"Healthcheck": ...}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.user is not None:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env is not None:
            out["Env"] = list(self.env)
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir is not None:
            out["WorkingDir"] = self.working_dir
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal is not None:
            out["StopSignal"] = self.stop_signal
        out.update(self.extra)
        return out


class _Pushable:
    """A manifest (or index) document: its bytes as pushed, and their digest."""

    @property
    def manifest_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @functools.cached_property
    def manifest_bytes(self) -> bytes:
        return canonical_json(self.manifest_json)

    @property
    def digest(self) -> str:
        """The manifest digest."""
        return sha256_digest(self.manifest_bytes)


class Image(_Pushable):
    """Layers + config: an OCI image manifest, or a Docker schema 2 one with ``docker=True``."""

    def __init__(
        self,
        layers: Sequence[Layer],
        config: ImageConfig | None = None,
        *,
        architecture: str = "amd64",
        os: str = "linux",
        variant: str | None = None,
        docker: bool = False,
        created: str = CREATED,
        annotations: Mapping[str, str] | None = None,
        extra_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.layers = list(layers)
        self.config = config if config is not None else ImageConfig()
        self.architecture = architecture
        self.os = os
        self.variant = variant
        self.docker = docker
        self.created = created
        self.annotations = dict(annotations or {})
        self.extra_config = dict(extra_config or {})

    @property
    def platform(self) -> dict[str, str]:
        p = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            p["variant"] = self.variant
        return p

    @property
    def media_type(self) -> str:
        return DOCKER_MANIFEST if self.docker else OCI_MANIFEST

    @property
    def config_media_type(self) -> str:
        return DOCKER_CONFIG if self.docker else OCI_CONFIG

    @functools.cached_property
    def config_json(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"created": self.created, **self.platform}
        cfg["config"] = self.config.to_json()
        cfg["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in self.layers]}
        cfg["history"] = [
            {"created": self.created, "created_by": f"crid tests: layer {i}"} for i in range(len(self.layers))
        ]
        cfg.update(self.extra_config)
        return cfg

    @functools.cached_property
    def config_bytes(self) -> bytes:
        return canonical_json(self.config_json)

    @property
    def config_digest(self) -> str:
        return sha256_digest(self.config_bytes)

    @functools.cached_property
    def manifest_json(self) -> dict[str, Any]:
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {
                "mediaType": self.config_media_type,
                "digest": self.config_digest,
                "size": len(self.config_bytes),
            },
            "layers": [layer.descriptor(self.docker) for layer in self.layers],
        }
        if self.annotations:
            manifest["annotations"] = dict(self.annotations)
        return manifest

    @property
    def image_id(self) -> str:
        """What CRI calls the image id: the config digest."""
        return self.config_digest

    def chain_ids(self) -> list[str]:
        """OCI chain ids of the layers, bottom first."""
        out: list[str] = []
        for layer in self.layers:
            out.append(layer.diff_id if not out else sha256_digest(f"{out[-1]} {layer.diff_id}".encode()))
        return out

    def descriptor(self) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.manifest_bytes),
            "platform": self.platform,
        }

    def blobs(self) -> Iterator[tuple[str, bytes]]:
        """(digest, bytes) of the config and every layer."""
        yield self.config_digest, self.config_bytes
        for layer in self.layers:
            yield layer.digest, layer.blob


class Index(_Pushable):
    """An OCI image index, or a Docker manifest list with ``docker=True``.

    ``platforms`` and ``descriptor_annotations`` (by position) override the
    platform of a descriptor or annotate it (e.g. an attestation manifest).
    """

    def __init__(
        self,
        manifests: Sequence[Image],
        *,
        docker: bool = False,
        annotations: Mapping[str, str] | None = None,
        descriptor_annotations: Mapping[int, Mapping[str, str]] | None = None,
        platforms: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        self.manifests = list(manifests)
        self.docker = docker
        self.annotations = dict(annotations or {})
        self.descriptor_annotations = {i: dict(a) for i, a in (descriptor_annotations or {}).items()}
        self.platforms = {i: dict(p) for i, p in (platforms or {}).items()}

    @property
    def media_type(self) -> str:
        return DOCKER_LIST if self.docker else OCI_INDEX

    @functools.cached_property
    def manifest_json(self) -> dict[str, Any]:
        descs = []
        for i, image in enumerate(self.manifests):
            desc = image.descriptor()
            if i in self.platforms:
                desc["platform"] = self.platforms[i]
            if i in self.descriptor_annotations:
                desc["annotations"] = self.descriptor_annotations[i]
            descs.append(desc)
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type, "manifests": descs}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def image_for(self, architecture: str, os: str = "linux") -> Image:
        for image in self.manifests:
            if image.architecture == architecture and image.os == os:
                return image
        raise KeyError(f"{os}/{architecture}")


Target = Image | Index
