"""Images derived from the buildah-oci image: skopeo's own re-compression (zstd layers, uncompressed
layers) and a buildx-style index with an attestation manifest.

skopeo writes the zstd copy into an OCI layout (``--dest-compress-format zstd``) and the uncompressed
one into a ``dir:`` copy (``--dest-decompress`` is a ``dir:`` option); both are pushed with
``--preserve-digests`` so that the registry gets exactly those blobs.
"""

import json
import shutil
from pathlib import Path
from typing import Any

from tests.support import oci_build as ob
from tests.support.corpus import buildah_images
from tests.support.corpus.model import TAG, Built
from tests.support.corpus.tools import Tools

IN_TOTO = "application/vnd.in-toto+json"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v0.2"


def recompressed(tools: Tools, out: Path) -> tuple[Built, Built]:
    source = f"oci:{out / 'buildah-oci'}:{TAG}"
    tools.skopeo("copy", "--dest-compress-format", "zstd", source, f"oci:{out / 'skopeo-zstd'}:{TAG}")
    tools.skopeo("copy", "--dest-decompress", source, f"dir:{out / 'skopeo-uncompressed'}")
    return (
        Built(
            "skopeo-zstd",
            f"oci:skopeo-zstd:{TAG}",
            buildah_images.check(),
            "the buildah-oci image re-compressed by skopeo copy --dest-compress-format zstd",
        ),
        Built(
            "skopeo-uncompressed",
            "dir:skopeo-uncompressed",
            buildah_images.check(),
            "the buildah-oci image with its layers decompressed by skopeo copy --dest-decompress",
        ),
    )


def _put(layout: Path, data: bytes) -> dict[str, Any]:
    digest = ob.sha256_digest(data)
    (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def attestation_index(out: Path) -> Built:
    """The buildah-oci image under an index as ``docker buildx build --provenance`` pushes it: the image
    for linux/amd64, then an attestation manifest of platform unknown/unknown that points at it
    (``vnd.docker.reference.*`` annotations) with one in-toto layer. The index and attestation JSON
    are written here (buildx is not packaged in Debian 12), the image is buildah's."""
    src, layout = out / "buildah-oci", out / "attestation-index"
    shutil.copytree(src, layout)
    image = json.loads((layout / "index.json").read_text())["manifests"][0]
    statement = {
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": SLSA_PROVENANCE,
        "subject": [{"name": "pkg:docker/corpus/attestation-index@1", "digest": {"sha256": image["digest"][7:]}}],
        "predicate": {"builder": {"id": ""}, "buildType": "https://mobyproject.org/buildkit@v1", "metadata": {}},
    }
    layer = _put(layout, ob.canonical_json(statement))
    config = {
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": ob.OCI_MANIFEST,
        "config": {"mediaType": ob.OCI_CONFIG, **_put(layout, ob.canonical_json(config))},
        "layers": [{"mediaType": IN_TOTO, **layer, "annotations": {"in-toto.io/predicate-type": SLSA_PROVENANCE}}],
    }
    attestation = {
        "mediaType": ob.OCI_MANIFEST,
        **_put(layout, ob.canonical_json(manifest)),
        "annotations": {
            "vnd.docker.reference.digest": image["digest"],
            "vnd.docker.reference.type": "attestation-manifest",
        },
        "platform": {"architecture": "unknown", "os": "unknown"},
    }
    amd64 = {
        "mediaType": image["mediaType"],
        "digest": image["digest"],
        "size": image["size"],
        "platform": {"architecture": "amd64", "os": "linux"},
    }
    index = {"schemaVersion": 2, "mediaType": ob.OCI_INDEX, "manifests": [amd64, attestation]}
    top = {"mediaType": ob.OCI_INDEX, **_put(layout, ob.canonical_json(index))}
    top["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return Built(
        "attestation-index",
        f"oci:attestation-index:{TAG}",
        buildah_images.check(),
        "a buildx-style index: linux/amd64 and an unknown/unknown attestation manifest with an in-toto layer",
    )
