"""Hostile layers: tar archives a safe unpacker must not let out of the rootfs.

Every attack aims at ``escape_dir``, an absolute host directory the test owns
(``/tmp`` by default; pass the test's own temp dir). Traversals climb with
more ``../`` than any path has, so they land in ``escape_dir`` wherever the
rootfs is. A case lists the host paths that must not exist afterwards
(``forbidden``) and the host files it tries to delete, overwrite or link
(``victims``); :meth:`MaliciousCase.prepare` creates the victims (and a
sentinel next to the unpack root), :meth:`MaliciousCase.violations` says
what went wrong. A safe unpacker either refuses the layer or keeps every
entry inside the root (an absolute name ``/x`` may become ``<root>/x``; a
path through a lower layer's symlink gets a real directory in its own layer,
as containerd and moby do: ``contained`` cases).

The archives are written header by header (``tarfile.TarInfo.tobuf``), so
names are exactly as given: ``tarfile`` does not get to refuse or clean them.
"""

import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.oci_build import (
    MTIME,
    Compression,
    Entry,
    Image,
    ImageConfig,
    Layer,
    Raw,
    busybox_layer,
)

UP = "../" * 24  # more than any real path is deep: lands in /
VICTIM_DATA = b"victim: must stay untouched\n"
PAYLOAD = b"escaped\n"
SENTINEL = "crid-unpack-sentinel"


def raw_file(name: str, data: bytes = PAYLOAD, mode: int = 0o644) -> Raw:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = tarfile.REGTYPE, mode, len(data), MTIME
    return Raw(info, data)


def raw_dir(name: str, mode: int = 0o755) -> Raw:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, MTIME
    return Raw(info)


def raw_symlink(name: str, target: str) -> Raw:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, MTIME
    return Raw(info)


def raw_hardlink(name: str, target: str) -> Raw:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = tarfile.LNKTYPE, target, 0o644, MTIME
    return Raw(info)


def climb(host_path: str) -> str:
    """A relative name that reaches absolute ``host_path`` from any directory."""
    return UP + host_path.lstrip("/")


@dataclass(frozen=True)
class MaliciousCase:
    name: str
    layers: tuple[Layer, ...]
    forbidden: tuple[str, ...] = ()  # host paths that must not exist afterwards
    victims: tuple[str, ...] = ()  # host files that must survive unchanged and unlinked
    parent_sentinel: bool = False  # the attack aims at the unpack root's parent
    contained: bool = False  # a safe unpacker may accept it, keeping it inside the root
    note: str = ""

    def prepare(self, root: Path | None = None) -> None:
        """Create the victims (and a sentinel beside ``root``); clear leftovers of a previous run."""
        for path in self.forbidden:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            elif os.path.lexists(path):
                os.unlink(path)
        for path in self.victims:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(VICTIM_DATA)
        if root is not None:
            root.parent.mkdir(parents=True, exist_ok=True)
            (root.parent / SENTINEL).write_bytes(VICTIM_DATA)

    def violations(self, root: Path | None = None) -> list[str]:
        """What the attack achieved: empty when the unpacker was safe."""
        found = [f"{p} was created" for p in self.forbidden if os.path.lexists(p)]
        for path in self.victims:
            if not os.path.lexists(path):
                found.append(f"{path} was deleted")
                continue
            st = os.lstat(path)
            if st.st_nlink != 1:
                found.append(f"{path} was hard-linked ({st.st_nlink} links)")
            if Path(path).read_bytes() != VICTIM_DATA:
                found.append(f"{path} was overwritten")
        if root is not None and not (root.parent / SENTINEL).exists():
            found.append(f"{root.parent} lost its contents")
        if root is not None and not root.is_dir():
            found.append(f"the unpack root {root} was deleted")
        return found

    def image(self, base: bool = True, compression: Compression = "gzip") -> Image:
        """An image of [busybox] + the hostile layers, to push and pull."""
        layers = ([busybox_layer(compression)] if base else []) + list(self.layers)
        return Image(layers, ImageConfig(cmd=["true"]))


def _one(entries: Sequence[Entry], compression: Compression) -> tuple[Layer, ...]:
    return (Layer(entries, compression),)


def malicious_cases(escape_dir: str = "/tmp", compression: Compression = "gzip") -> list[MaliciousCase]:
    """Every attack, aimed at the absolute directory ``escape_dir``."""
    d = escape_dir.rstrip("/")
    if not escape_dir.startswith("/") or not d:
        raise ValueError("escape_dir must be an absolute directory other than /")

    def target(case: str) -> str:
        return f"{d}/crid-escape-{case}"

    def victim(case: str) -> str:
        return f"{d}/crid-victim-{case}"

    cases = [
        MaliciousCase(
            "traversal",
            _one([raw_file(climb(target("traversal")))], compression),
            forbidden=(target("traversal"),),
            note="a member named ../../..<escape_dir>/x",
        ),
        MaliciousCase(
            "traversal-inner",
            _one([raw_dir("usr"), raw_file("usr/" + climb(target("traversal-inner")))], compression),
            forbidden=(target("traversal-inner"),),
            note="usr/../../..<escape_dir>/x: the climb starts inside the name",
        ),
        MaliciousCase(
            "absolute",
            _one([raw_file(target("absolute"))], compression),
            forbidden=(target("absolute"),),
            note="an absolute member name: must land under the root or be refused",
        ),
        MaliciousCase(
            "symlink-abs",
            _one(
                [raw_symlink("evil", d), raw_file(f"evil/{os.path.basename(target('symlink-abs'))}")],
                compression,
            ),
            forbidden=(target("symlink-abs"),),
            note="symlink evil -> <escape_dir> (absolute), then evil/x in the same layer",
        ),
        MaliciousCase(
            "symlink-rel",
            _one(
                [raw_symlink("evil", climb(d)), raw_file(f"evil/{os.path.basename(target('symlink-rel'))}")],
                compression,
            ),
            forbidden=(target("symlink-rel"),),
            note="symlink evil -> ../../..<escape_dir>, then evil/x in the same layer",
        ),
        MaliciousCase(
            "symlink-abs-two-layers",
            (
                Layer([raw_symlink("evil", d)], compression),
                Layer([raw_file(f"evil/{os.path.basename(target('symlink-abs-two-layers'))}")], compression),
            ),
            forbidden=(target("symlink-abs-two-layers"),),
            contained=True,
            note="layer 1: symlink evil -> <escape_dir>; layer 2: evil/x",
        ),
        MaliciousCase(
            "symlink-rel-two-layers",
            (
                Layer([raw_symlink("evil", climb(d))], compression),
                Layer([raw_file(f"evil/{os.path.basename(target('symlink-rel-two-layers'))}")], compression),
            ),
            forbidden=(target("symlink-rel-two-layers"),),
            contained=True,
            note="layer 1: symlink evil -> ../../..<escape_dir>; layer 2: evil/x",
        ),
        MaliciousCase(
            "symlink-dir",
            _one(
                [raw_symlink("evil", d), raw_dir(f"evil/{os.path.basename(target('symlink-dir'))}")],
                compression,
            ),
            forbidden=(target("symlink-dir"),),
            note="symlink evil -> <escape_dir>, then a directory evil/x",
        ),
        MaliciousCase(
            "symlink-chain",
            _one(
                [
                    raw_dir("a"),
                    raw_symlink("a/up", ".."),
                    raw_symlink("a/b", "up/" + climb(d)),
                    raw_file(f"a/b/{os.path.basename(target('symlink-chain'))}"),
                ],
                compression,
            ),
            forbidden=(target("symlink-chain"),),
            note="a/b -> up/../.., a/up -> ..: the escape only shows after resolving two links",
        ),
        MaliciousCase(
            "hardlink-abs",
            _one([raw_hardlink("stolen", victim("hardlink-abs"))], compression),
            victims=(victim("hardlink-abs"),),
            note="a hard link to an absolute host path",
        ),
        MaliciousCase(
            "hardlink-rel",
            _one([raw_hardlink("stolen", climb(victim("hardlink-rel")))], compression),
            victims=(victim("hardlink-rel"),),
            note="a hard link to ../../..<host file>",
        ),
        MaliciousCase(
            "hardlink-write-through",
            _one(
                [raw_hardlink("stolen", victim("hardlink-write-through")), raw_file("stolen", PAYLOAD)],
                compression,
            ),
            victims=(victim("hardlink-write-through"),),
            note="a hard link to a host file, then a regular file of that name: written through?",
        ),
        MaliciousCase(
            "hardlink-via-symlink",
            _one(
                [
                    raw_symlink("evil", d),
                    raw_hardlink("stolen", f"evil/{os.path.basename(victim('hardlink-via-symlink'))}"),
                ],
                compression,
            ),
            victims=(victim("hardlink-via-symlink"),),
            note="a hard link whose target resolves through a symlink to outside",
        ),
        MaliciousCase(
            "whiteout-traversal",
            _one(
                [raw_file(climb(d) + "/.wh." + os.path.basename(victim("whiteout-traversal")), b"")],
                compression,
            ),
            victims=(victim("whiteout-traversal"),),
            note="../../..<escape_dir>/.wh.victim: a whiteout that climbs out",
        ),
        MaliciousCase(
            "whiteout-through-symlink",
            (
                Layer([raw_symlink("evil", d)], compression),
                Layer(
                    [raw_file("evil/.wh." + os.path.basename(victim("whiteout-through-symlink")), b"")],
                    compression,
                ),
            ),
            victims=(victim("whiteout-through-symlink"),),
            contained=True,
            note="layer 1: symlink evil -> <escape_dir>; layer 2: evil/.wh.victim",
        ),
        MaliciousCase(
            "opaque-traversal",
            _one([raw_file(climb(d) + "/.wh..wh..opq", b"")], compression),
            victims=(victim("opaque-traversal"),),
            note="../../..<escape_dir>/.wh..wh..opq: an opaque marker that would empty a host dir",
        ),
        MaliciousCase(
            "whiteout-dotdot",
            _one([raw_dir("usr"), raw_file(".wh...", b""), raw_file("usr/.wh...", b"")], compression),
            parent_sentinel=True,
            note=".wh... whites out '..': the unpack root's parent (and usr/..) must survive",
        ),
    ]
    return cases


def malicious_case(name: str, escape_dir: str = "/tmp", compression: Compression = "gzip") -> MaliciousCase:
    for case in malicious_cases(escape_dir, compression):
        if case.name == name:
            return case
    raise KeyError(name)


CASE_NAMES = tuple(c.name for c in malicious_cases())
