"""Images made by umoci: ``init``/``new``/``unpack``/``repack`` of a staged rootfs, ``insert`` of files,
opaque dirs and whiteouts, ``config`` for the runtime config and big manifests and configs.

umoci 0.4.7's ``insert`` writes a tar stream without the last entry's padding and without the two zero
blocks that end an archive (its ``repack`` layers have both); the layers are kept exactly so.
"""

import os
from pathlib import Path

from tests.support.corpus import stage
from tests.support.corpus.check import Check
from tests.support.corpus.model import TAG, Built
from tests.support.corpus.tools import Tools

# 11 annotations (or labels) of 100 000 bytes: a manifest (or config) over 1 MiB, each value under
# the kernel's 128 KiB limit on one argument
BIG_VALUES = 11
BIG_VALUE_BYTES = 100_000


class Layout:
    """One umoci OCI layout; ``image`` is the ``--image`` argument of its tag."""

    def __init__(self, tools: Tools, path: Path, tag: str = TAG) -> None:
        self.tools, self.path, self.tag = tools, path, tag
        self.image = f"{path}:{tag}"

    def create(self) -> "Layout":
        self.tools.umoci("init", "--layout", str(self.path))
        self.tools.umoci("new", "--image", self.image)
        return self

    def unpack(self, bundle: Path) -> Path:
        self.tools.umoci("unpack", "--image", self.image, str(bundle))
        return bundle / "rootfs"

    def repack(self, bundle: Path) -> None:
        # --refresh-bundle: the next repack is a diff against this one, not against the empty image
        self.tools.umoci("repack", "--refresh-bundle", "--image", self.image, str(bundle))

    def insert(self, source: Path, target: str, opaque: bool = False) -> None:
        self.tools.umoci("insert", *(["--opaque"] if opaque else []), "--image", self.image, str(source), target)

    def whiteout(self, target: str) -> None:
        self.tools.umoci("insert", "--whiteout", "--image", self.image, target)

    def config(self, *args: str) -> None:
        self.tools.umoci("config", "--image", self.image, *args)

    def add_layer(self, tar: Path) -> None:
        self.tools.umoci("raw", "add-layer", "--image", self.image, str(tar))

    def gc(self) -> None:
        self.tools.umoci("gc", "--layout", str(self.path))

    @property
    def source(self) -> str:
        return f"oci:{self.path.name}:{self.tag}"


def runtime_config(layout: Layout, *extra: str) -> None:
    layout.config("--config.env", stage.ENV_PATH, "--config.cmd", "/bin/sh", *extra)


def busybox_base(tools: Tools, out: Path, work: Path, name: str) -> tuple[Layout, Path]:
    """A new layout and its unpacked bundle with a busybox rootfs (and /layers/1) staged in it, for the
    caller to change and repack."""
    layout = Layout(tools, out / name).create()
    bundle = work / f"{name}-bundle"
    rootfs = layout.unpack(bundle)
    stage.busybox_rootfs(rootfs)
    stage.write(rootfs / "layers" / "1", f"{name} layer 1\n")
    return layout, bundle


def whiteouts(tools: Tools, out: Path, work: Path) -> Built:
    """Two repacks (the second a diff with a whiteout, a file become a symlink, a new setuid bit, a new
    hard link to a lower file), then inserts: an opaque dir, a whiteout, a file.

    (No directory become a file: umoci 0.4.7 writes that as the file followed by whiteouts *under* it,
    a layer containerd refuses.)"""
    layout, bundle = busybox_base(tools, out, work, "umoci-whiteouts")
    root = bundle / "rootfs"
    for name in ("keep", "gone", "whiteme"):
        stage.write(root / "data" / name, f"{name}\n")
    stage.write(root / "data" / "opq" / "a", "a\n")
    stage.write(root / "data" / "opq" / "sub" / "b", "b\n")
    stage.write(root / "swap" / "file", "a file\n")
    stage.write(root / "data" / "prog", "#!/bin/sh\n", 0o755)
    stage.write(root / "hl" / "a", "linked\n")
    layout.repack(bundle)

    (root / "data" / "gone").unlink()
    (root / "swap" / "file").unlink()
    os.symlink("../data/keep", root / "swap" / "file")
    os.chmod(root / "data" / "prog", 0o4755)
    os.link(root / "hl" / "a", root / "hl" / "b")
    stage.write(root / "layers" / "2", "umoci-whiteouts layer 2\n")
    layout.repack(bundle)

    src = work / "umoci-whiteouts-src"
    stage.write(src / "opq" / "c", "c\n")
    layout.insert(src / "opq", "/data/opq", opaque=True)
    layout.whiteout("/data/whiteme")
    stage.write(src / "five", "umoci-whiteouts layer 5\n")
    layout.insert(src / "five", "/layers/5")
    runtime_config(layout)
    layout.gc()

    c = Check()
    c.has("/layers/1", "umoci-whiteouts layer 1").has("/layers/2", "umoci-whiteouts layer 2")
    c.has("/layers/5", "umoci-whiteouts layer 5").only("/layers", "1", "2", "5")
    c.has("/data/keep", "keep").gone("/data/gone").gone("/data/whiteme")
    c.only("/data/opq", "c").has("/data/opq/c", "c").gone("/data/opq/sub")
    c.symlink("/swap/file", "../data/keep").has("/swap/file", "keep")
    c.setuid("/data/prog").stats("/data/prog", "4755 0:0")
    c.hardlinks("/hl/a", "/hl/b").has("/hl/b", "linked").hardlinks("/bin/sh", "/bin/busybox")
    return Built(
        "umoci-whiteouts",
        layout.source,
        c,
        "umoci repack diffs (whiteout, file->symlink, setuid, hard link) and insert layers "
        "(opaque dir, whiteout, file) whose tar streams lack the end-of-archive blocks",
    )


def merged_usr(tools: Tools, out: Path, work: Path) -> Built:
    """A base whose ``lib`` is a symlink to ``usr/lib`` (merged /usr), then an inserted layer with just
    ``lib/x86_64-linux-gnu/libextra.so`` in it, as rules_oci and umoci write one: containerd makes a
    real ``lib`` in that layer (mode and owner of the lower ``usr/lib``), which hides the symlink."""
    layout, bundle = busybox_base(tools, out, work, "umoci-merged-usr")
    root = bundle / "rootfs"
    multiarch = root / "usr" / "lib" / "x86_64-linux-gnu"
    stage.write(multiarch / "libbase.so", "base library\n")
    stage.mkdir(root / "usr" / "lib", 0o775, (0, 50))
    stage.mkdir(multiarch, 0o750, (0, 50))
    os.symlink("usr/lib", root / "lib")
    layout.repack(bundle)

    src = stage.write(work / "umoci-merged-usr-src" / "libextra.so", "extra library\n")
    layout.insert(src, "/lib/x86_64-linux-gnu/libextra.so")
    runtime_config(layout)
    layout.gc()

    c = Check()
    c.has("/layers/1", "umoci-merged-usr layer 1")
    c.isdir("/lib").only("/lib", "x86_64-linux-gnu").stats("/lib", "775 0:50")
    c.isdir("/lib/x86_64-linux-gnu").stats("/lib/x86_64-linux-gnu", "750 0:50")
    c.has("/lib/x86_64-linux-gnu/libextra.so", "extra library").gone("/lib/x86_64-linux-gnu/libbase.so")
    c.has("/usr/lib/x86_64-linux-gnu/libbase.so", "base library").gone("/usr/lib/x86_64-linux-gnu/libextra.so")
    return Built(
        "umoci-merged-usr",
        layout.source,
        c,
        "an inserted layer writing lib/x86_64-linux-gnu/libextra.so (no parent entries) over a lower "
        "lib -> usr/lib symlink: the layer gets a real lib dir, as containerd and moby make it",
    )


def _big_values(prefix: str) -> list[str]:
    return [f"{prefix}.{i:02d}=" + (f"{i:02d}" * (BIG_VALUE_BYTES // 2)) for i in range(BIG_VALUES)]


def big_manifest(tools: Tools, out: Path, work: Path) -> Built:
    layout, bundle = busybox_base(tools, out, work, "big-manifest")
    layout.repack(bundle)
    args = [a for v in _big_values("org.example.corpus.big") for a in ("--manifest.annotation", v)]
    runtime_config(layout, *args)
    layout.gc()
    c = Check().has("/layers/1", "big-manifest layer 1").hardlinks("/bin/sh", "/bin/busybox")
    return Built("big-manifest", layout.source, c, "an image manifest over 1 MiB (annotations made by umoci config)")


def big_config(tools: Tools, out: Path, work: Path) -> Built:
    layout, bundle = busybox_base(tools, out, work, "big-config")
    layout.repack(bundle)
    args = [a for v in _big_values("org.example.corpus.big") for a in ("--config.label", v)]
    runtime_config(layout, *args)
    layout.gc()
    c = Check().has("/layers/1", "big-config layer 1").hardlinks("/bin/sh", "/bin/busybox")
    return Built("big-config", layout.source, c, "an image config over 1 MiB (labels made by umoci config)")


# the 15 platforms of the fake images of the 16-platform index (the 16th, linux/amd64, is real)
FAKE_PLATFORMS = (
    ("linux", "386", ""),
    ("linux", "arm", "v5"),
    ("linux", "arm", "v6"),
    ("linux", "arm", "v7"),
    ("linux", "arm64", "v8"),
    ("linux", "mips", ""),
    ("linux", "mipsle", ""),
    ("linux", "mips64", ""),
    ("linux", "mips64le", ""),
    ("linux", "ppc64le", ""),
    ("linux", "riscv64", ""),
    ("linux", "s390x", ""),
    ("linux", "loong64", ""),
    ("windows", "amd64", ""),
    ("freebsd", "amd64", ""),
)


def fake_platforms(tools: Tools, work: Path) -> list[tuple[str, str, str, str]]:
    """One tiny image per fake platform (a /platform file and the platform in its config), all tags of
    one layout; (os, arch, variant, oci:LAYOUT:TAG) of each."""
    path = work / "fake-platforms"
    tools.umoci("init", "--layout", str(path))
    out = []
    for os_name, arch, variant in FAKE_PLATFORMS:
        tag = "-".join(p for p in (os_name, arch, variant) if p)
        layout = Layout(tools, path, tag)
        tools.umoci("new", "--image", layout.image)
        layout.config("--os", os_name, "--architecture", arch, "--config.cmd", "/nothing-runs-here")
        plat = stage.write(work / "fake-src" / tag, f"{tag}\n")
        layout.insert(plat, "/platform")
        out.append((os_name, arch, variant, f"oci:{path}:{tag}"))
    return out
