"""Images made by buildah: ``bud --isolation chroot --layers`` of a Dockerfile with several RUN steps,
in OCI and in Docker format, and ``manifest create/add/push`` of a 16-platform index.

With the overlay storage driver a directory deleted and made again in one RUN step comes out as an
opaque dir (``.wh..wh..opq``); with vfs as whiteouts of each old entry. Either is a shape under test.
"""

import json
import shutil
from pathlib import Path

from tests.support.corpus import stage
from tests.support.corpus.check import Check
from tests.support.corpus.model import TAG, Built
from tests.support.corpus.tools import Tools
from tests.support.corpus.umoci_images import fake_platforms

IMAGE = "localhost/corpus-buildah"
LIST = "localhost/corpus-index16"

# exec-form RUNs through busybox: the image has no shell until the first RUN installs one
DOCKERFILE = """\
FROM scratch
COPY rootfs/ /
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install /bin && mkdir -p /etc /tmp /data/tree/sub /swap \
 && chmod 1777 /tmp && printf 'root:x:0:0:root:/root:/bin/sh\\\\n' > /etc/passwd && echo 'root:x:0:' > /etc/group \
 && echo 'buildah layer 2' > /layers/2 && echo old > /data/tree/sub/old && echo old > /data/tree/top \
 && echo 'a file' > /swap/file && echo linked > /data/hl && echo prog > /data/prog && echo gone > /data/gone"]
RUN ["/bin/sh", "-c", "rm -rf /data/tree && mkdir -p /data/tree/new && echo new > /data/tree/new/f \
 && rm /swap/file && ln -s ../data/hl /swap/file && chmod 4755 /data/prog && ln /data/hl /data/hl2 \
 && rm /data/gone && echo 'buildah layer 3' > /layers/3"]
RUN ["/bin/sh", "-c", "echo 'buildah layer 4' > /layers/4 && chmod 2750 /data/tree && chown 0:50 /data/tree \
 && mkdir /data/empty && ln -s /nowhere /data/dangling"]
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["/bin/sh"]
"""


def check() -> Check:
    """What the Dockerfile's layers leave."""
    c = Check()
    c.has("/layers/1", "buildah layer 1")  # COPY
    c.hardlinks("/bin/sh", "/bin/busybox")  # layer 1's busybox, copied up and linked by layer 2
    c.has("/layers/2", "buildah layer 2").has("/layers/3", "buildah layer 3").has("/layers/4", "buildah layer 4")
    c.only("/data/tree", "new").has("/data/tree/new/f", "new").gone("/data/tree/sub").gone("/data/tree/top")
    c.stats("/data/tree", "2750 0:50")
    c.symlink("/swap/file", "../data/hl").has("/swap/file", "linked")
    c.setuid("/data/prog").stats("/data/prog", "4755 0:0")
    c.hardlinks("/data/hl", "/data/hl2").gone("/data/gone")
    c.isdir("/data/empty").only("/data/empty").symlink("/data/dangling", "/nowhere")
    return c


def _context(work: Path) -> Path:
    ctx = work / "buildah-context"
    busybox = ctx / "rootfs" / "bin" / "busybox"
    busybox.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(stage.BUSYBOX, busybox)
    busybox.chmod(0o755)
    stage.write(ctx / "rootfs" / "layers" / "1", "buildah layer 1\n")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    return ctx


def bud(tools: Tools, out: Path, work: Path) -> tuple[Built, Built]:
    """The Dockerfile built twice: OCI format into an OCI layout, Docker format (schema 2, gzip
    layers as buildah pushes them) into a ``dir:`` copy, which keeps the Docker manifest as is."""
    ctx = _context(work)
    common = ["bud", "--isolation", "chroot", "--layers", "--pull-never", "--identity-label=false"]
    tools.buildah(*common, "--format", "oci", "-t", f"{IMAGE}:oci", str(ctx))
    tools.buildah("push", f"{IMAGE}:oci", f"oci:{out / 'buildah-oci'}:{TAG}")
    # --no-cache: the docker build must run its steps again, not reuse the OCI build's layers
    tools.buildah(*common, "--no-cache", "--format", "docker", "-t", f"{IMAGE}:docker", str(ctx))
    tools.buildah("push", "--format", "v2s2", f"{IMAGE}:docker", f"dir:{out / 'buildah-docker'}")
    about = "buildah bud --isolation chroot ({}): RUN steps that delete and recreate a directory, replace a "
    about += "file by a symlink, set a setuid bit and make hard links"
    return (
        Built("buildah-oci", f"oci:buildah-oci:{TAG}", check(), about.format("--format oci")),
        Built("buildah-docker", "dir:buildah-docker", check(), about.format("--format docker")),
    )


def index16(tools: Tools, out: Path, work: Path) -> tuple[Built, Built]:
    """``buildah manifest`` lists of 15 fake platforms and linux/amd64 (the buildah-oci image) last;
    the second copy has a 90 kB annotation on every entry: an index over 1 MiB."""
    tools.buildah("manifest", "create", LIST)
    for os_name, arch, variant, ref in fake_platforms(tools, work):
        plat = ["--os", os_name, "--arch", arch, *(["--variant", variant] if variant else [])]
        tools.buildah("manifest", "add", *plat, LIST, ref)
    tools.buildah("manifest", "add", "--os", "linux", "--arch", "amd64", LIST, f"oci:{out / 'buildah-oci'}:{TAG}")
    tools.buildah("manifest", "push", "--all", LIST, f"oci:{out / 'index16'}:{TAG}")
    for entry in json.loads(tools.buildah("manifest", "inspect", LIST))["manifests"]:
        pad = f"org.example.corpus.pad={'p' * 90_000}"
        tools.buildah("manifest", "annotate", "--annotation", pad, LIST, entry["digest"])
    tools.buildah("manifest", "push", "--all", LIST, f"oci:{out / 'index16-big'}:{TAG}")
    return (
        Built("index16", f"oci:index16:{TAG}", check(), "a buildah manifest list of 16 platforms, linux/amd64 last"),
        Built(
            "index16-big",
            f"oci:index16-big:{TAG}",
            check(),
            "the 16-platform list with a 90 kB annotation on each entry: an index over 1 MiB",
        ),
    )
