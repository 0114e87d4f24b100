"""Reading a pull's documents: JSON objects, descriptors, the host's entry of
an index, a manifest's layers with their diff and chain ids, and the image
config's types."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any, TypedDict, cast

from cri.errors import FailedPrecondition, NotFound
from cri.host import HOST
from cri.images import mediatypes as mt
from cri.images.reference import SHA256_RE


@dataclass(frozen=True)
class Layer:
    digest: str
    size: int
    compression: str
    diff_id: str
    chain_id: str


class ImageConfig(TypedDict, total=False):
    """An image's config document (image-spec config.md) as read: that it is a JSON object
    is all that is checked then; each reader checks the fields it uses."""

    architecture: object
    os: object
    config: object  # the container defaults: ContainerDefaults once checked (cri.runtime.spec.process)
    rootfs: object  # its diff_ids are checked by layers_of
    history: object


class ContainerDefaults(TypedDict, total=False):
    """The image config's "config" object with the fields a container's process comes from
    checked for type (null is allowed: not set)."""

    User: str | None
    Env: list[str] | None
    Entrypoint: list[str] | None
    Cmd: list[str] | None
    WorkingDir: str | None
    StopSignal: object  # checked by cri.runtime.signals.stop_signal


def host_platform() -> tuple[str, str, str]:
    """(os, architecture, variant) in OCI terms."""
    machine = HOST.machine().lower()
    arch, variant = {
        "x86_64": ("amd64", ""),
        "amd64": ("amd64", ""),
        "aarch64": ("arm64", "v8"),
        "arm64": ("arm64", "v8"),
        "armv7l": ("arm", "v7"),
        "armv6l": ("arm", "v6"),
        "ppc64le": ("ppc64le", ""),
        "s390x": ("s390x", ""),
        "riscv64": ("riscv64", ""),
    }.get(machine, (machine, ""))
    return "linux", arch, variant


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain ids: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n))."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def user_of(config: ImageConfig) -> tuple[int | None, str]:
    """uid or user name from the image config's User (``:group`` ignored)."""
    defaults = config.get("config")
    if defaults is None:
        defaults = {}
    # containerd's unmarshalling into an OCI image config refuses these too
    if not isinstance(defaults, dict):
        raise FailedPrecondition("image config: 'config' is not a JSON object")
    raw = defaults.get("User")
    if raw is None:
        raw = ""
    if not isinstance(raw, str):
        raise FailedPrecondition("image config: 'config.User' is not a string")
    user = raw.split(":", 1)[0]
    if not user:
        return None, ""
    return (int(user), "") if user.isdigit() else (None, user)


def json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except ValueError:
        raise FailedPrecondition(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise FailedPrecondition(f"{what} is not a JSON object")
    return doc


def image_config(data: bytes, what: str) -> ImageConfig:
    """An image config document: a JSON object (its fields are checked where they are read)."""
    return cast(ImageConfig, json_object(data, what))


def descriptor(d: Any, what: str) -> tuple[str, int, str]:
    """(digest, size, media type) of an OCI descriptor, checked."""
    if not isinstance(d, dict):
        raise FailedPrecondition(f"{what}: descriptor is not an object")
    digest, size, media = d.get("digest"), d.get("size"), d.get("mediaType", "")
    if not isinstance(digest, str) or not SHA256_RE.match(digest):
        raise FailedPrecondition(f"{what}: unsupported or invalid digest {digest!r}")
    if not isinstance(size, int) or size < 0:
        raise FailedPrecondition(f"{what} {digest}: invalid size {size!r}")
    return digest, size, str(media)


def pick_platform(index: dict[str, Any], ref: str) -> tuple[str, int, str]:
    """The descriptor of the host platform's manifest in an index."""
    want_os, want_arch, want_variant = host_platform()
    candidates: list[tuple[int, tuple[str, int, str]]] = []
    seen = []
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict):
            continue
        plat = entry.get("platform") or {}
        os_name, arch, variant = plat.get("os", ""), plat.get("architecture", ""), plat.get("variant", "")
        seen.append("/".join(p for p in (os_name, arch, variant) if p))
        if os_name != want_os or arch != want_arch:
            continue
        # an exact variant beats none, which beats another variant
        score = 2 if variant == want_variant else 1 if not variant else 0
        if score:
            candidates.append((score, descriptor(entry, f"index entry of {ref}")))
    if not candidates:
        raise NotFound(
            f"{ref}: no image for {want_os}/{want_arch}{'/' + want_variant if want_variant else ''} "
            f"in its index (it has: {', '.join(seen) or 'nothing'})"
        )
    candidates.sort(key=lambda c: -c[0])
    return candidates[0][1]


def layers_of(manifest: dict[str, Any], config: ImageConfig, ref: str) -> list[Layer]:
    """The manifest's layers, each with the diff id the config gives it."""
    descs = manifest.get("layers")
    if not isinstance(descs, list):
        raise FailedPrecondition(f"manifest of {ref} has no layer list")
    rootfs = config.get("rootfs") or {}
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or len(diff_ids) != len(descs):
        raise FailedPrecondition(
            f"{ref}: the config lists {len(diff_ids) if isinstance(diff_ids, list) else 'no'} diff_ids "
            f"for {len(descs)} layers"
        )
    for d in diff_ids:
        if not isinstance(d, str) or not SHA256_RE.match(d):
            raise FailedPrecondition(f"{ref}: invalid diff_id {d!r} in the config")
    chains = chain_ids(diff_ids)
    layers = []
    for i, desc in enumerate(descs):
        digest, size, media = descriptor(desc, f"layer {i} of {ref}")
        compression = mt.LAYERS.get(media)
        if compression is None:
            raise FailedPrecondition(f"{ref}: layer {digest} has unsupported media type {media!r}")
        layers.append(Layer(digest, size, compression, diff_ids[i], chains[i]))
    return layers
