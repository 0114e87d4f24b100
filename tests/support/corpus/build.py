"""Build the corpus into the cache, or find it there.

The cache is ``.cache/corpus/`` in the clone (``CRID_CORPUS_CACHE`` to move it). A build goes into a
work dir there and is renamed to ``images-<key>`` when complete, ``corpus.json`` last; the key hashes
the builders' sources, oci_build, busybox and the tools' versions, so any change rebuilds and an
unchanged tree reuses the images. The Debian rootfs tarball is cached beside it under a key of its own.
A lock file serialises builds of concurrent runs; stale builds are removed after a successful one.
"""

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.support import oci_build, oci_images, oci_tar
from tests.support.cache_lock import locked
from tests.support.corpus import buildah_images, debian, derived, stage, tar_images, umoci_images
from tests.support.corpus.model import Built, Corpus, CorpusImage, describe
from tests.support.corpus.tools import Tools

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_ENV = "CRID_CORPUS_CACHE"
HASHED_TOOLS = ("buildah", "umoci", "skopeo", "tar", "gzip")

# every image, in the order of the tests; a build must make exactly these
NAMES = (
    "umoci-whiteouts",
    "umoci-merged-usr",
    "buildah-oci",
    "buildah-docker",
    "skopeo-zstd",
    "skopeo-uncompressed",
    "gnutar",
    "many-layers",
    "attestation-index",
    "index16",
    "index16-big",
    "big-manifest",
    "big-config",
    "debian",
)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or REPO_ROOT / ".cache" / "corpus")


def source_key(tools: Tools) -> str:
    h = hashlib.sha256()
    builder = [Path(oci_build.__file__), Path(oci_images.__file__), Path(oci_tar.__file__)]
    for path in [*sorted(Path(__file__).parent.glob("*.py")), *builder]:
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    h.update(hashlib.sha256(Path(stage.BUSYBOX).read_bytes()).digest())
    for name in HASHED_TOOLS:
        h.update(tools.version(name).encode())
    return h.hexdigest()[:16]


def _build_all(tools: Tools, out: Path, work: Path, debian_tar: Path) -> list[Built]:
    built: list[Built] = []
    built += buildah_images.bud(tools, out, work)
    built += derived.recompressed(tools, out)
    built.append(derived.attestation_index(out))
    built += buildah_images.index16(tools, out, work)
    for fn in (umoci_images.whiteouts, umoci_images.merged_usr, umoci_images.big_manifest, umoci_images.big_config):
        built.append(fn(tools, out, work))
    built += [tar_images.gnutar(tools, out, work), tar_images.many_layers(tools, out, work)]
    built.append(debian.image(tools, out, work, debian_tar))
    return built


def ensure(log: Callable[[str], None] = print) -> tuple[Corpus, float]:
    """The corpus, built now if the cache has no build of this key; and the seconds that took.
    ``log`` gets a line per command run (also kept in the build's ``build.log``)."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with locked(cache):
        work = Path(tempfile.mkdtemp(prefix="work-", dir=cache))
        try:
            lines: list[str] = []

            def record(line: str) -> None:
                lines.append(line)
                log(line)

            tools = Tools(work, record)
            final = cache / f"images-{source_key(tools)}"
            if (final / "corpus.json").exists():
                return Corpus.load(final), time.monotonic() - t0
            log(f"building the image corpus into {final}")
            debian_tar = debian.rootfs(tools, cache)
            out = work / "out"
            out.mkdir()
            built = _build_all(tools, out, work, debian_tar)
            assert tuple(sorted(b.name for b in built)) == tuple(sorted(NAMES)), [b.name for b in built]
            order = {name: i for i, name in enumerate(NAMES)}
            images = []
            for b in sorted(built, key=lambda b: order[b.name]):
                d = describe(out, b.source)
                images.append(
                    CorpusImage(
                        b.name,
                        b.source,
                        d.media_type,
                        d.index,
                        d.image_id,
                        d.manifest_bytes,
                        d.layers,
                        b.check.command(),
                        b.check.ok_line,
                        b.about,
                    )
                )
            Corpus(out, tuple(images)).save()
            record(f"built the image corpus in {time.monotonic() - t0:.1f}s")
            (out / "build.log").write_text("\n".join(lines) + "\n")
            shutil.rmtree(final, ignore_errors=True)
            os.rename(out, final)
            _prune(cache, keep={final.name, debian_tar.name, work.name})
            return Corpus.load(final), time.monotonic() - t0
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _prune(cache: Path, keep: set[str]) -> None:
    """Remove earlier builds, Debian tarballs of other keys and work dirs of interrupted builds."""
    for path in cache.iterdir():
        if path.name in keep or not path.name.startswith(("images-", "debian-", "work-")):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
