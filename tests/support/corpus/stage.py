"""Files the corpus tools are given: busybox rootfs trees and small files, written to a staging dir."""

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.oci_build import COMMON_APPLETS

BUSYBOX = "/bin/busybox"  # Debian's busybox-static
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nstaff:x:50:\nnogroup:x:65534:\n"
ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def applets(busybox: str = BUSYBOX) -> list[str]:
    """oci_build's common applets that this busybox has: enough for the checks and a shell, and few
    enough that umoci's repack (which hashes every hard link) stays quick."""
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    return sorted(set(out.split()) & set(COMMON_APPLETS) - {"busybox"})


def write(path: Path, text: str | bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def mkdir(path: Path, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, *owner)
    os.chmod(path, mode)  # not subject to the umask, unlike mkdir's mode
    return path


def busybox_rootfs(root: Path, busybox: str = BUSYBOX) -> Path:
    """A small rootfs: /bin/busybox with every applet as a hard link next to it (so the image has hard
    links), /etc/passwd and /etc/group, /tmp, /root, and the usual mount points."""
    mkdir(root)
    for d in ("bin", "dev", "etc", "proc", "sys", "usr", "var"):
        mkdir(root / d)
    mkdir(root / "tmp", 0o1777)
    mkdir(root / "root", 0o700)
    shutil.copyfile(busybox, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    for name in applets(busybox):
        link = root / "bin" / name
        if not link.exists():
            os.link(root / "bin" / "busybox", link)
    write(root / "etc" / "passwd", PASSWD)
    write(root / "etc" / "group", GROUP)
    return root
