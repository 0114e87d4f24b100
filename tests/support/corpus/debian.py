"""A real distribution image: a Debian bookworm rootfs made by mmdebstrap (minbase, nginx-light,
python3-minimal; merged /usr, so /lib is a symlink to usr/lib), imported by umoci as a layer as is,
plus a GNU tar layer with a page for nginx.

mmdebstrap downloads the packages from Debian's mirror as apt does; its tarball is the slow part of the
corpus, so it is cached on its own, keyed by the mmdebstrap command line and version.
"""

import hashlib
import json
import os
from pathlib import Path

from tests.support.corpus import stage
from tests.support.corpus.check import Check
from tests.support.corpus.model import Built
from tests.support.corpus.tools import Tools
from tests.support.corpus.umoci_images import Layout

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("nginx-light", "python3-minimal")
# no docs, man pages or translations: a smaller tarball, same programs
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*")
PAGE = "var/www/html/corpus.html"
PAGE_TEXT = "served by nginx from the crid corpus\n"
NGINX = ["/usr/sbin/nginx", "-g", "daemon off;"]


def mmdebstrap_args(target: Path) -> list[str]:
    return [
        "mmdebstrap",
        "--mode=root",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        "--format=tar",
        '--aptopt=Acquire::Retries "3"',
        *(f"--dpkgopt=path-exclude={p}" for p in EXCLUDES),
        SUITE,
        str(target),
        MIRROR,
    ]


def rootfs_key(tools: Tools) -> str:
    text = json.dumps([mmdebstrap_args(Path("TARGET")), tools.version("mmdebstrap")])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rootfs(tools: Tools, cache: Path) -> Path:
    """The rootfs tarball in ``cache``, made by mmdebstrap if it is not there (a minute or so, most of
    it downloading)."""
    path = cache / f"debian-{SUITE}-{rootfs_key(tools)}.tar"
    if path.exists():
        return path
    tmp = tools.tmp / path.name
    # its own mount namespace: mmdebstrap mounts /proc, /sys and /dev in the chroot
    tools.run(mmdebstrap_args(tmp), varlib=False, timeout=1200)
    os.replace(tmp, path)
    return path


def image(tools: Tools, out: Path, work: Path, rootfs_tar: Path) -> Built:
    layout = Layout(tools, out / "debian").create()
    layout.add_layer(rootfs_tar)
    stage.write(work / "debian-page" / PAGE, PAGE_TEXT)
    # just the file: its parent dirs come from the rootfs layer
    tar = ["tar", "--numeric-owner", "-C", str(work / "debian-page"), "-cf", "-", PAGE]
    page_tar = tools.to_file(tar, work / "page.tar")
    layout.add_layer(page_tar)
    layout.config(
        "--config.env",
        stage.ENV_PATH,
        "--config.exposedports",
        "80/tcp",
        *(f"--config.cmd={a}" for a in NGINX),
    )
    layout.gc()
    c = Check()
    c.symlink("/lib", "usr/lib").symlink("/bin", "usr/bin").symlink("/sbin", "usr/sbin").isdir("/usr/lib")
    c.contains("/lib/", "x86_64-linux-gnu").contains("/lib/x86_64-linux-gnu/", "libc.so.6")
    c.prints("42", "python3", "-c", "print(6 * 7)")
    c.prints("12", "sh", "-c", "cut -d. -f1 /etc/debian_version")
    c.isfile("/usr/sbin/nginx").has(f"/{PAGE}", PAGE_TEXT.strip())
    return Built(
        "debian",
        layout.source,
        c,
        "Debian bookworm made by mmdebstrap (minbase, nginx-light, python3-minimal) imported by umoci",
    )
