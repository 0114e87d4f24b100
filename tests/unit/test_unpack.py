"""Layer unpacking: what lands in the snapshot, and what is refused.

Needs root (ownership, device nodes, trusted.* xattrs), like crid itself.
"""

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest
import zstandard

from cri.errors import FailedPrecondition
from cri.images.unpack import UnsafeLayer, apply_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking sets owners and makes device nodes: root only")


# vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (bit 13)
CAP_NET_RAW = "\x01\x00\x00\x02\x00\x20\x00\x00" + "\x00" * 12


def _entry(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for k, v in attrs.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def _layer(tmp: Path, build: object, compression: str = "none") -> tuple[str, str]:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        build(tar)  # type: ignore[operator]
    raw = buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    blob = {"none": raw, "gzip": gzip.compress(raw), "zstd": zstandard.ZstdCompressor().compress(raw)}[compression]
    path = tmp / f"blob-{diff_id[7:19]}"
    path.write_bytes(blob)
    return str(path), diff_id


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    target = tmp_path / "snap" / "fs"
    target.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("untouched")
    return target, outside


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_files_modes_owners_links(tmp_path: Path, dirs: tuple[Path, Path], compression: str) -> None:
    target, _ = dirs

    def build(t: tarfile.TarFile) -> None:
        _entry(t, "./", tarfile.DIRTYPE)
        _entry(t, "bin", tarfile.DIRTYPE, mode=0o711, uid=0, gid=0)
        _entry(t, "bin/busybox", data=b"\x7fELF", mode=0o4755)
        _entry(t, "bin/ls", tarfile.LNKTYPE, linkname="bin/busybox")
        _entry(t, "bin/sh", tarfile.SYMTYPE, linkname="/bin/busybox")
        _entry(t, "home/u/file", data=b"hello", uid=1000, gid=1001, mode=0o600)
        _entry(t, "ping", data=b"x", pax_headers={"SCHILY.xattr.security.capability": CAP_NET_RAW})
        _entry(t, "evil", data=b"x", pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y"})
        _entry(t, "dev/fifo", tarfile.FIFOTYPE)

    blob, diff_id = _layer(tmp_path, build, compression)
    stats = apply_layer(blob, compression, str(target), [], diff_id)
    assert stats.diff_id == diff_id and stats.inodes >= 8
    bb = os.lstat(target / "bin/busybox")
    assert stat.S_IMODE(bb.st_mode) == 0o4755
    assert os.lstat(target / "bin/ls").st_ino == bb.st_ino
    assert os.readlink(target / "bin/sh") == "/bin/busybox"
    assert stat.S_IMODE(os.lstat(target / "bin").st_mode) == 0o711
    f = os.lstat(target / "home/u/file")
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode), f.st_mtime) == (1000, 1001, 0o600, 1_600_000_000)
    assert os.getxattr(target / "ping", "security.capability") == CAP_NET_RAW.encode()
    assert "trusted.overlay.opaque" not in os.listxattr(target / "evil")
    assert stat.S_ISFIFO(os.lstat(target / "dev/fifo").st_mode)


def test_whiteouts_and_opaque(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, _ = dirs

    def build(t: tarfile.TarFile) -> None:
        _entry(t, "etc/.wh.motd")
        _entry(t, "var/cache/.wh..wh..opq")
        _entry(t, ".wh..wh.plnk", tarfile.DIRTYPE)

    blob, diff_id = _layer(tmp_path, build)
    apply_layer(blob, "none", str(target), [], diff_id)
    wh = os.lstat(target / "etc/motd")
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(target / "var/cache", "trusted.overlay.opaque") == b"y"
    assert not (target / ".wh..wh.plnk").exists()


def test_absolute_names_land_inside(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, outside = dirs
    blob, diff_id = _layer(tmp_path, lambda t: _entry(t, f"{outside}/abs", data=b"in"))
    apply_layer(blob, "none", str(target), [], diff_id)
    assert (target / str(outside).lstrip("/") / "abs").read_bytes() == b"in"
    assert sorted(os.listdir(outside)) == ["keep"]


def _refused(tmp_path: Path, target: Path, build: object, match: str, lowers: list[str] | None = None) -> None:
    blob, diff_id = _layer(tmp_path, build)
    with pytest.raises(UnsafeLayer, match=match):
        apply_layer(blob, "none", str(target), lowers or [], diff_id)


def test_traversal_is_refused(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, outside = dirs
    _refused(tmp_path, target, lambda t: _entry(t, "a/../../../outside/x", data=b"bad"), "climbs out")
    _refused(tmp_path, target, lambda t: _entry(t, "../.wh.keep"), "climbs out")
    _refused(tmp_path, target, lambda t: _entry(t, "x/.wh.."), "whiteout")
    assert sorted(os.listdir(outside)) == ["keep"]


def test_symlink_escape_in_one_layer_is_refused(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, outside = dirs

    def build(t: tarfile.TarFile) -> None:
        _entry(t, "evil", tarfile.SYMTYPE, linkname=str(outside))
        _entry(t, "evil/pwned", data=b"bad")

    _refused(tmp_path, target, build, "'evil/pwned' goes through the symlink 'evil'")

    def relative(t: tarfile.TarFile) -> None:
        _entry(t, "rel", tarfile.SYMTYPE, linkname="../../outside")
        _entry(t, "rel/.wh.keep")

    _refused(tmp_path, target, relative, "goes through the symlink 'rel'")
    assert sorted(os.listdir(outside)) == ["keep"]
    assert (outside / "keep").read_text() == "untouched"


def test_path_through_a_lower_symlink_gets_a_real_dir(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """As containerd and moby: the layer gets its own directory, which hides the
    lower symlink; nothing is written where the symlink points."""
    target, outside = dirs
    lower = tmp_path / "lower"
    (lower / "usr" / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    os.chown(lower / "usr" / "lib", 7, 8)
    os.chmod(lower / "usr" / "lib", 0o750)
    os.chown(lower / "usr" / "lib" / "x86_64-linux-gnu", 0, 50)
    os.chmod(lower / "usr" / "lib" / "x86_64-linux-gnu", 0o705)
    os.symlink("usr/lib", lower / "lib")
    os.symlink(str(outside), lower / "evil")
    os.symlink("../../../../../../../../..", lower / "up")

    def build(t: tarfile.TarFile) -> None:
        _entry(t, "lib/x86_64-linux-gnu/libextra.so", data=b"elf")
        _entry(t, "evil/pwned", data=b"bad")
        _entry(t, "up/tmp/pwned", data=b"bad")

    blob, diff_id = _layer(tmp_path, build)
    apply_layer(blob, "none", str(target), [str(lower)], diff_id)
    lib = os.lstat(target / "lib")
    assert stat.S_ISDIR(lib.st_mode)
    assert (lib.st_uid, lib.st_gid, stat.S_IMODE(lib.st_mode)) == (7, 8, 0o750)  # from usr/lib, the link's target
    arch = os.lstat(target / "lib/x86_64-linux-gnu")  # the next implied dir too, through the lower symlink
    assert (arch.st_uid, arch.st_gid, stat.S_IMODE(arch.st_mode)) == (0, 50, 0o705)
    assert (target / "lib/x86_64-linux-gnu/libextra.so").read_bytes() == b"elf"
    assert (target / "evil/pwned").read_bytes() == b"bad"
    assert stat.S_ISDIR(os.lstat(target / "evil").st_mode)
    assert (target / "up/tmp/pwned").exists()
    assert sorted(os.listdir(outside)) == ["keep"]
    assert sorted(os.listdir(lower)) == ["evil", "lib", "up", "usr"]
    assert os.listdir(lower / "usr/lib/x86_64-linux-gnu") == []


def test_lower_view_is_merged_like_overlayfs(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """Owners of implied dirs come from the top-most lower that has them; a whiteout
    or an opaque dir hides what is below it; a hard link never reads through a
    lower symlink onto the host."""
    target, outside = dirs
    bottom, middle = tmp_path / "bottom", tmp_path / "middle"
    for d in ("a", "b", "c"):
        (bottom / d).mkdir(parents=True)
        os.chown(bottom / d, 1, 1)
    (bottom / "c" / "file").write_bytes(b"hidden by opaque")
    (middle / "a").mkdir(parents=True)
    os.chown(middle / "a", 2, 2)
    os.mknod(middle / "b", stat.S_IFCHR, os.makedev(0, 0))  # whiteout of b
    (middle / "c").mkdir()
    os.setxattr(middle / "c", "trusted.overlay.opaque", b"y")
    os.symlink(str(outside), middle / "evil")

    def build(t: tarfile.TarFile) -> None:
        _entry(t, "a/x", data=b"1")
        _entry(t, "b/x", data=b"2")
        _entry(t, "c/alias", tarfile.LNKTYPE, linkname="c/file")

    blob, diff_id = _layer(tmp_path, build)
    lowers = [str(middle), str(bottom)]
    with pytest.raises(UnsafeLayer, match="'c/alias' links to 'c/file', which does not exist"):
        apply_layer(blob, "none", str(target), lowers, diff_id)
    assert os.lstat(target / "a").st_uid == 2
    assert os.lstat(target / "b").st_uid == 0  # b is whited out below: a fresh dir

    target2 = tmp_path / "snap2"
    target2.mkdir()
    blob, diff_id = _layer(tmp_path, lambda t: _entry(t, "stolen", tarfile.LNKTYPE, linkname="evil/keep"))
    with pytest.raises(UnsafeLayer, match="which does not exist"):
        apply_layer(blob, "none", str(target2), lowers, diff_id)
    assert os.stat(outside / "keep").st_nlink == 1
    assert not (target2 / "stolen").exists()


def _raw_layer(tmp_path: Path, data: bytes) -> tuple[str, str]:
    path = tmp_path / f"raw-{hashlib.sha256(data).hexdigest()[:12]}"
    path.write_bytes(data)
    return str(path), "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_bytes(entries: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in entries:
            _entry(tar, name, data=data)
    return buf.getvalue()


@pytest.mark.parametrize("cut", ["padding-and-end", "end-blocks", "one-end-block"])
def test_stream_without_end_of_archive_is_accepted(tmp_path: Path, dirs: tuple[Path, Path], cut: str) -> None:
    """umoci writes layers like these; GNU tar and containerd extract them."""
    target, _ = dirs
    full = _tar_bytes([("a", b"first"), ("dir/b", b"x" * 700)])
    end = full.rstrip(b"\0")  # the last member's data ends in "x"
    data = {
        "padding-and-end": end,
        "end-blocks": end + bytes(-len(end) % 512),
        "one-end-block": end + bytes(-len(end) % 512) + bytes(512),
    }[cut]
    blob, diff_id = _raw_layer(tmp_path, data)
    stats = apply_layer(blob, "none", str(target), [], diff_id)
    assert stats.diff_id == diff_id
    assert (target / "a").read_bytes() == b"first" and (target / "dir/b").read_bytes() == b"x" * 700


def test_member_cut_short_is_refused(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, _ = dirs
    end = _tar_bytes([("a", b"first"), ("b", b"y" * 700)]).rstrip(b"\0")
    blob, diff_id = _raw_layer(tmp_path, end[:-100])  # 100 bytes of b's data missing
    with pytest.raises(FailedPrecondition, match="'b' is cut short"):
        apply_layer(blob, "none", str(target), [], diff_id)


def test_multi_member_gzip_layer(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    """GNU tar piped through several gzip runs (or pigz) makes concatenated members."""
    target, _ = dirs
    raw = _tar_bytes([("a", b"1" * 5000), ("b", b"2" * 5000)])
    blob = tmp_path / "multi.gz"
    blob.write_bytes(gzip.compress(raw[:3000]) + gzip.compress(raw[3000:]))
    apply_layer(str(blob), "gzip", str(target), [], "sha256:" + hashlib.sha256(raw).hexdigest())
    assert (target / "b").read_bytes() == b"2" * 5000


def test_hardlink_escape_is_refused(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, outside = dirs
    _refused(tmp_path, target, lambda t: _entry(t, "h", tarfile.LNKTYPE, linkname="../../outside/keep"), "climbs out")

    def via_symlink(t: tarfile.TarFile) -> None:
        _entry(t, "s", tarfile.SYMTYPE, linkname=str(outside))
        _entry(t, "h", tarfile.LNKTYPE, linkname="s/keep")

    _refused(tmp_path, target, via_symlink, "goes through the symlink 's'")
    assert os.stat(outside / "keep").st_nlink == 1


def test_hardlink_to_lower_layer_file_copies_it_up(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, _ = dirs
    lower = tmp_path / "lower"
    (lower / "bin").mkdir(parents=True)
    (lower / "bin" / "tool").write_bytes(b"tool")
    blob, diff_id = _layer(tmp_path, lambda t: _entry(t, "bin/alias", tarfile.LNKTYPE, linkname="bin/tool"))
    apply_layer(blob, "none", str(target), [str(lower)], diff_id)
    assert (target / "bin/alias").read_bytes() == b"tool"
    assert os.stat(lower / "bin" / "tool").st_nlink == 1


def test_diff_id_mismatch(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, _ = dirs
    blob, _ = _layer(tmp_path, lambda t: _entry(t, "f", data=b"x"))
    with pytest.raises(FailedPrecondition, match="diff_id mismatch"):
        apply_layer(blob, "none", str(target), [], "sha256:" + "0" * 64)


def test_corrupt_stream(tmp_path: Path, dirs: tuple[Path, Path]) -> None:
    target, _ = dirs
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00garbage" * 10)
    with pytest.raises(FailedPrecondition, match="layer"):
        apply_layer(str(bad), "gzip", str(target), [], "sha256:" + "0" * 64)
