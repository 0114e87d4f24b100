"""What the corpus is: its images, where each one's cached copy is, and what a pull and a run must give.

The list is ``corpus.json`` in the cache dir, written last by a build; paths in it are relative to that
dir so a cache can be moved.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support import oci_build as ob
from tests.support.corpus.check import Check

LIST_FILE = "corpus.json"
REPO_PREFIX = "corpus"
TAG = "1"


@dataclass(frozen=True)
class Built:
    """What a builder made: the image's name, its cached copy (a skopeo source relative to the corpus
    dir), its check and what it tests."""

    name: str
    source: str
    check: Check
    about: str


@dataclass(frozen=True)
class CorpusImage:
    """One image of the corpus.

    ``source`` is a skopeo source of the cached copy relative to the corpus dir (``oci:DIR:TAG`` or
    ``dir:DIR``); ``media_type`` that of its top manifest, ``index`` whether that is an index (pushed
    with ``--all``); ``image_id`` is the config digest a linux/amd64 pull must give; ``check`` the
    container command that checks what the layers left and ``ok_line`` the last line it prints when
    all is well; ``about`` what the image is made to test.
    """

    name: str
    source: str
    media_type: str
    index: bool
    image_id: str
    manifest_bytes: int
    layers: int
    check: list[str]
    ok_line: str
    about: str

    @property
    def repo(self) -> str:
        return f"{REPO_PREFIX}/{self.name}"

    def ref(self, registry_host: str) -> str:
        return f"{registry_host}/{self.repo}:{TAG}"

    def source_ref(self, corpus_dir: Path) -> str:
        transport, _, rest = self.source.partition(":")
        return f"{transport}:{corpus_dir / rest}"


@dataclass(frozen=True)
class Corpus:
    dir: Path
    images: tuple[CorpusImage, ...]

    def __getitem__(self, name: str) -> CorpusImage:
        for image in self.images:
            if image.name == name:
                return image
        raise KeyError(name)

    def save(self) -> None:
        doc = {"images": [asdict(i) for i in self.images]}
        (self.dir / LIST_FILE).write_text(json.dumps(doc, indent=1) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "Corpus":
        doc = json.loads((directory / LIST_FILE).read_text())
        return cls(directory, tuple(CorpusImage(**i) for i in doc["images"]))


# ---------------------------------------------------------------- reading cached copies


def _read_json(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_bytes())
    assert isinstance(doc, dict), path
    return doc


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.removeprefix("sha256:")


def is_host_platform(platform: dict[str, Any]) -> bool:
    return platform.get("os") == "linux" and platform.get("architecture") == "amd64" and not platform.get("variant")


@dataclass(frozen=True)
class Described:
    media_type: str  # of the top manifest
    index: bool
    image_id: str  # config digest of the linux/amd64 image
    manifest_bytes: int  # of the top manifest
    layers: int  # of the linux/amd64 image


def describe(corpus_dir: Path, source: str) -> Described:
    """What a cached copy is, read from its files."""
    transport, _, rest = source.partition(":")
    if transport == "dir":
        data = (corpus_dir / rest / "manifest.json").read_bytes()
        manifest = json.loads(data)
        return Described(manifest["mediaType"], False, manifest["config"]["digest"], len(data), len(manifest["layers"]))
    path, _, tag = rest.rpartition(":")
    layout = corpus_dir / path
    top = next(
        m
        for m in _read_json(layout / "index.json")["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
    )
    data = _blob(layout, top["digest"]).read_bytes()
    doc = json.loads(data)
    media_type = doc.get("mediaType", top["mediaType"])
    index = media_type in (ob.OCI_INDEX, ob.DOCKER_LIST)
    if index:
        hosts = [m for m in doc["manifests"] if is_host_platform(m.get("platform", {}))]
        assert len(hosts) == 1, f"{source}: {len(hosts)} linux/amd64 entries"
        doc = _read_json(_blob(layout, hosts[0]["digest"]))
    return Described(media_type, index, doc["config"]["digest"], len(data), len(doc["layers"]))
