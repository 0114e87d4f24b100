"""Images whose layers GNU tar and gzip write: ``./``-prefixed members, GNU long names, a multi-member
gzip stream, PAX headers, and a 101-layer image (overlay's mount options are one page: over 4 KiB of
lower dirs need care). The manifests and configs around those blobs are written by oci_build.
"""

from pathlib import Path

from tests.support import oci_build as ob
from tests.support.corpus import stage
from tests.support.corpus.check import Check
from tests.support.corpus.model import TAG, Built
from tests.support.corpus.tools import Tools

TAR = ["tar", "--numeric-owner", "--sort=name"]
LONG_DIR = "long/" + "d" * 90 + "/" + "e" * 60  # over tar's 100-byte name field: a GNU ././@LongLink
MANY = 100  # layers on top of the base of the many-layers image


def _tar(tools: Tools, root: Path, out: Path, *members: str, fmt: str = "gnu") -> bytes:
    tools.to_file([*TAR, f"--format={fmt}", "-C", str(root), "-cf", "-", *(members or (".",))], out)
    return out.read_bytes()


def _gzip(tools: Tools, data: bytes, out: Path) -> bytes:
    raw = out.with_suffix(".raw")
    raw.write_bytes(data)
    tools.to_file(["gzip", "-n", "-c", str(raw)], out)
    raw.unlink()
    return out.read_bytes()


def _image(layers: list[ob.Layer]) -> ob.Image:
    return ob.Image(layers, ob.ImageConfig(cmd=["/bin/sh"], env=[stage.ENV_PATH]))


def gnutar(tools: Tools, out: Path, work: Path) -> Built:
    """Three layers: a ``./``-prefixed busybox rootfs as two gzip members one after the other (split in
    the middle of a file); a ``./``-prefixed GNU layer with whiteout and opaque files (as tools that
    tar a directory write them), a long name, a hard link, a symlink, a setuid file; an uncompressed
    PAX layer with a UTF-8 name."""
    w = work / "gnutar"
    base = stage.busybox_rootfs(w / "l1")
    stage.write(base / "layers" / "1", "gnutar layer 1\n")
    for name in ("gone", "opq/old1", "opq/old2"):
        stage.write(base / "data" / name, f"{name}\n")
    l1 = _tar(tools, base, w / "l1.tar")
    half = len(l1) // 2 + 100  # not at a block boundary
    blob1 = _gzip(tools, l1[:half], w / "l1a.gz") + _gzip(tools, l1[half:], w / "l1b.gz")

    top = stage.mkdir(w / "l2")
    stage.write(top / "layers" / "2", "gnutar layer 2\n")
    stage.write(top / "data" / ".wh.gone", "")
    stage.write(top / "data" / "opq" / ".wh..wh..opq", "")
    stage.write(top / "data" / "opq" / "new", "new\n")
    stage.write(top / LONG_DIR / "file", "long name\n")
    stage.write(top / "data" / "hl", "linked\n")
    (top / "data" / "hl2").hardlink_to(top / "data" / "hl")
    (top / "data" / "sym").symlink_to("hl")
    stage.write(top / "data" / "prog", "#!/bin/sh\n", 0o4755)
    l2 = _tar(tools, top, w / "l2.tar")

    pax = stage.mkdir(w / "l3")
    stage.write(pax / "layers" / "3", "gnutar layer 3\n")
    stage.write(pax / "data" / "pax-\u00fc\u00f1\u00ee", "utf-8 name\n")
    l3 = _tar(tools, pax, w / "l3.tar", fmt="posix")

    image = _image(
        [
            ob.Layer(tar=l1, blob=blob1, compression="gzip"),
            ob.Layer(tar=l2, blob=_gzip(tools, l2, w / "l2.gz"), compression="gzip"),
            ob.Layer(tar=l3, compression="none"),
        ]
    )
    ob.write_oci_layout(out / "gnutar", image, TAG)

    c = Check().hardlinks("/bin/sh", "/bin/busybox")
    c.has("/layers/1", "gnutar layer 1").has("/layers/2", "gnutar layer 2").has("/layers/3", "gnutar layer 3")
    c.gone("/data/gone").only("/data/opq", "new").has("/data/opq/new", "new")
    c.has(f"/{LONG_DIR}/file", "long name")
    c.hardlinks("/data/hl", "/data/hl2").symlink("/data/sym", "hl").has("/data/sym", "linked")
    c.setuid("/data/prog").stats("/data/prog", "4755 0:0")
    c.has("/data/pax-\u00fc\u00f1\u00ee", "utf-8 name")
    return Built(
        "gnutar",
        f"oci:gnutar:{TAG}",
        c,
        "GNU tar layers: ./-prefixed members, a two-member gzip stream, whiteout files, a GNU long name, a PAX layer",
    )


def many_layers(tools: Tools, out: Path, work: Path) -> Built:
    """A busybox base and 100 layers on it, each adding /layers/lN and replacing /layers/top."""
    w = work / "many"
    base = stage.busybox_rootfs(w / "base")
    stage.write(base / "layers" / "base", "many-layers base\n")
    l0 = _tar(tools, base, w / "base.tar")
    layers = [ob.Layer(tar=l0, blob=_gzip(tools, l0, w / "base.gz"), compression="gzip")]
    for i in range(1, MANY + 1):
        d = w / f"l{i}"
        stage.write(d / "layers" / f"l{i}", f"{i}\n")
        stage.write(d / "layers" / "top", f"{i}\n")
        tar = _tar(tools, d, w / f"l{i}.tar", f"layers/l{i}", "layers/top")
        layers.append(ob.Layer(tar=tar, blob=_gzip(tools, tar, w / f"l{i}.gz"), compression="gzip"))
    ob.write_oci_layout(out / "many-layers", _image(layers), TAG)
    c = Check().has("/layers/base", "many-layers base").each(1, MANY, "/layers/l$i", "$i").has("/layers/top", str(MANY))
    return Built(
        "many-layers",
        f"oci:many-layers:{TAG}",
        c,
        f"{MANY + 1} layers made by GNU tar: the overlay mount's lower dirs are over a page long",
    )
