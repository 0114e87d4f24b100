"""A corpus of test images made by real tools, cached between runs and pushed to a test registry.

The images (``build.NAMES``), each with a check its container runs (:mod:`.check`):

- umoci: repack diffs with whiteouts, inserts of an opaque dir, a whiteout and files (tar streams
  without end-of-archive blocks), a layer writing through a lower ``lib -> usr/lib`` symlink, a
  manifest and a config over 1 MiB (:mod:`.umoci_images`);
- buildah ``bud --isolation chroot`` of a Dockerfile with several RUN steps in OCI and Docker format,
  and a 16-platform ``buildah manifest`` list with linux/amd64 last, also with an index over 1 MiB
  (:mod:`.buildah_images`);
- skopeo's zstd and uncompressed copies, a buildx-style index with an attestation manifest
  (:mod:`.derived`);
- GNU tar layers (``./`` members, multi-member gzip, long names, PAX) and a 101-layer image
  (:mod:`.tar_images`);
- Debian bookworm by mmdebstrap imported by umoci (:mod:`.debian`).

    corpus, seconds = build.ensure()          # from .cache/corpus/ when up to date
    push(corpus, registry.host, Tools(work))  # skopeo copy --preserve-digests of each
"""

from tests.support.corpus.model import Corpus, CorpusImage
from tests.support.corpus.tools import Tools

__all__ = ["Corpus", "CorpusImage", "Tools", "push"]


def push(corpus: Corpus, registry_host: str, tools: Tools) -> None:
    """``skopeo copy`` every image to ``registry_host`` (plain HTTP) as ``corpus/NAME:1``, blobs and
    manifests exactly as cached (``--preserve-digests``), every entry of an index (``--all``)."""
    for image in corpus.images:
        args = ["copy", "--quiet", "--preserve-digests", "--dest-tls-verify=false"]
        if image.index:
            args.append("--all")
        tools.skopeo(*args, image.source_ref(corpus.dir), f"docker://{image.ref(registry_host)}")
