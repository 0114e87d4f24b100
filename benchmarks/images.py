"""The benchmark images, built in code and pushed to a local registry that both runtimes pull from.

- ``bench/pause:3.9``: Debian's static catatonit as ``/catatonit -P`` (containerd's sandbox_image);
- ``bench/busybox:1``: Debian's busybox-static with its applets (the containers run ``sleep 3600``);
- ``bench/big:1``: ``big_layers`` gzip layers of large incompressible files, ``big_bytes`` in all;
- ``bench/small:1``: one gzip layer of ``small_files`` small files.

The registry is Debian's docker-registry on 127.0.0.1 (plain HTTP); each runtime gets a
``hosts.toml`` for it in its registry config dir, so both pull the same names the same way.
"""

import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.core import ImageSizes, PushedImage, TestImages
from tests.support.oci_build import Dir, File, Image, ImageConfig, Layer, big_image, busybox_image, small_files_layer
from tests.support.registry import Registry

CATATONIT = "/usr/bin/catatonit"  # Debian's catatonit: statically linked
PAUSE = "bench/pause:3.9"
BUSYBOX = "bench/busybox:1"
BIG = "bench/big:1"
SMALL = "bench/small:1"


def pause_image(catatonit: str = CATATONIT) -> Image:
    layer = Layer(
        [
            File("catatonit", Path(catatonit).read_bytes(), mode=0o755),
            Dir("dev"),
            Dir("etc"),
            Dir("proc"),
            Dir("sys"),
        ]
    )
    return Image([layer], ImageConfig(entrypoint=["/catatonit", "-P"], cmd=None))


def push(registry: Registry, name: str, image: Image) -> PushedImage:
    repo, _, tag = name.partition(":")
    registry.push(repo, tag, image)
    layers = image.layers
    return PushedImage(
        ref=f"{registry.host}/{name}",
        compressed_bytes=len(image.manifest_bytes) + len(image.config_bytes) + sum(la.size for la in layers),
        unpacked_bytes=sum(len(la.tar) for la in layers),
        blobs=(image.config_digest, *(la.digest for la in layers)),
    )


def build_and_push(registry: Registry, sizes: ImageSizes, log: Callable[[str], None]) -> TestImages:
    """Build the four images and push them; the big ones are dropped from memory once pushed."""
    t0 = time.monotonic()
    pause = push(registry, PAUSE, pause_image())
    busybox = push(registry, BUSYBOX, busybox_image())
    big = push(
        registry,
        BIG,
        big_image(
            sizes.big_bytes,
            layers=sizes.big_layers,
            file_size=sizes.big_file_bytes,
            small_files=0,
            seed="crid-bench",
            base=False,
        ),
    )
    small_layer = small_files_layer(sizes.small_files, seed="crid-bench")
    small = push(registry, SMALL, Image([small_layer], ImageConfig(cmd=None)))
    log(
        f"pushed the test images to {registry.url} in {time.monotonic() - t0:.1f}s: "
        f"big {big.compressed_bytes / 1e6:.1f} MB in {sizes.big_layers} layers, "
        f"small files {small.compressed_bytes / 1e6:.1f} MB ({sizes.small_files} files, "
        f"{small.unpacked_bytes / 1e6:.1f} MB unpacked)"
    )
    return TestImages(pause=pause, busybox=busybox, big=big, small=small)


def write_hosts_toml(config_dir: Path, registry: Registry) -> Path:
    """``<config_dir>/<host:port>/hosts.toml`` for the registry (plain HTTP): containerd's format,
    which crid reads too."""
    path = config_dir / registry.host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(registry.hosts_toml())
    return path
