"""Property tests of the layer unpacker (cri/images/unpack.py): random layers never
write outside their snapshot.

Each example lays out a fresh sandbox: ``<root>/u1/.../u40/jail`` (the deep
chain keeps any relative climb of a broken unpacker inside ``<root>``), and
in the jail sentinel files, the lower layers and ``snap/fs``, the snapshot.
A generated layer (names with ``..``, absolute names, whiteouts, opaque
markers, symlinks and hardlinks to anywhere in the sandbox, duplicates) is
applied to ``snap/fs`` on top of generated lower layers. Property: every
inode of the sandbox outside ``snap/fs`` keeps its type, mode, owner, link
count, size, times, content, link target and xattrs; and the unpack either
succeeds or raises FailedPrecondition (UnsafeLayer is one).

Needs root (owners, device nodes, trusted.* xattrs), like crid itself.
"""

import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from cri.errors import FailedPrecondition
from cri.images.unpack import OPAQUE, OPAQUE_XATTR, apply_layer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unpacking sets owners and makes device nodes: root only")

JAIL = "@JAIL@"  # the jail's absolute path, filled in per example
DEPTH = 40
SNAPSHOT = "snap/fs"
SENTINEL = b"sentinel: must stay untouched\n"

# --- layers as data (what hypothesis prints for a failing example)


@dataclass(frozen=True)
class E:
    """One tar member: kind is file, dir, symlink, hardlink, fifo, whiteout-dev or null-dev."""

    kind: str
    name: str
    target: str = ""
    mode: int = 0o644
    uid: int = 0
    xattr: str = ""

    def info(self, jail: str) -> tuple[tarfile.TarInfo, bytes]:
        ti = tarfile.TarInfo(self.name.replace(JAIL, jail))
        ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE,
                   "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}.get(self.kind, tarfile.CHRTYPE)  # fmt: skip
        ti.linkname = self.target.replace(JAIL, jail)
        ti.mode, ti.uid, ti.gid, ti.mtime = self.mode, self.uid, self.uid, 1_600_000_000 + self.uid
        ti.devmajor, ti.devminor = (1, 3) if self.kind == "null-dev" else (0, 0)
        if self.xattr:
            ti.pax_headers = {f"SCHILY.xattr.{self.xattr}": "y"}
        data = f"{self.name}->{self.target}\n".encode() if self.kind == "file" else b""
        ti.size = len(data)
        return ti, data


@dataclass(frozen=True)
class L:
    """One entry of a lower layer, made directly on disk: dir, file, symlink, whiteout or opaque."""

    kind: str
    parts: tuple[str, ...]
    target: str = ""


def tar_bytes(entries: list[E], jail: str) -> bytes:
    """A PAX tar of ``entries`` header by header: names exactly as given, nothing cleaned."""
    out = io.BytesIO()
    for e in entries:
        ti, data = e.info(jail)
        out.write(ti.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        out.write(data + b"\0" * (-len(data) % tarfile.BLOCKSIZE))
    out.write(b"\0" * 2 * tarfile.BLOCKSIZE)
    return out.getvalue()


# --- strategies

PLAIN = ["a", "b", "keep", "outside", "sub", "deep", "link", "snap", "fs", "lower0", "x y", "\u00fc"]
ODD = ["..", ".", "", ".wh.a", ".wh.b", ".wh.keep", ".wh.sub", OPAQUE, ".wh..wh.plnk", ".wh..", ".wh.", ".wh..."]
# mostly plain names, so that some layers get through whole
component = st.sampled_from(PLAIN * 8 + ODD)
prefix = st.sampled_from([""] * 50 + ["./", "../", "../../", f"{JAIL}/", f"{JAIL}/{SNAPSHOT}/", f"{JAIL}/outside/"])


def _name(prefix: str, comps: list[str], slash: str) -> str:
    name = prefix + "/".join(comps) + slash
    # absolute names only into the jail: were the unpacker broken, "/x" would land on the host
    return JAIL + name if name.startswith("/") else name


names = st.builds(
    _name,
    prefix,
    st.lists(component, min_size=1, max_size=5),
    st.sampled_from(["", "", "/"]),
)
# where links point: the sentinels (absolute, or climbing more or less than enough), or any name
ESCAPES = [JAIL, f"{JAIL}/outside", f"{JAIL}/outside/keep", f"{JAIL}/keep", f"{JAIL}/lower0", f"{JAIL}/outside/sub",
           "..", "../..", "../../..", "../../outside", "../../outside/keep", "../../keep", "../keep",
           "../../../../../outside/keep", "../../outside/sub", "."]  # fmt: skip
targets = names | st.sampled_from(ESCAPES)
modes = st.sampled_from([0o644, 0o755, 0o000, 0o4755, 0o1777, 0o7777, 0o600])
xattrs = st.sampled_from([""] * 30 + ["user.k", OPAQUE_XATTR, "security.capability"])


@st.composite
def entries(draw: st.DrawFn) -> E:
    kind = draw(st.sampled_from(["file", "file", "dir", "dir", "symlink", "symlink", "hardlink", "hardlink",
                                 "fifo", "whiteout-dev", "null-dev"]))  # fmt: skip
    target = draw(targets) if kind in ("symlink", "hardlink") else ""
    return E(kind, draw(names), target, draw(modes), draw(st.integers(0, 3)), draw(xattrs))


LOWER_NAMES = ["a", "b", "keep", "sub", "link", "outside", "deep"]
lower_entry = st.builds(
    L,
    st.sampled_from(["dir", "dir", "file", "symlink", "symlink", "whiteout", "opaque"]),
    st.lists(st.sampled_from(LOWER_NAMES), min_size=1, max_size=3).map(tuple),
    targets,
)


@st.composite
def layer_entries(draw: st.DrawFn) -> list[E]:
    """Entries that often build on earlier ones: the same name again (replacing it), a name below
    it (through it, if it became a link; often a sentinel's name), a hardlink to it or below it."""
    out: list[E] = []
    for _ in range(draw(st.integers(1, 10))):
        e = draw(entries())
        how = draw(st.sampled_from(["new", "new", "same", "below", "below", "link"])) if out else "new"
        # the likeliest ways out go through links, and below dirs most entries get through: favour both
        favoured = [x.name for x in out for _ in range({"symlink": 3, "dir": 2}.get(x.kind, 0))]
        earlier = draw(st.sampled_from(favoured + [x.name for x in out])) if out else ""
        below = f"{earlier.rstrip('/')}/{draw(st.sampled_from(['keep', 'sub', 'outside', 'link']) | component)}"
        if how == "same":
            e = E(e.kind, earlier, e.target, e.mode, e.uid, e.xattr)
        elif how == "below":
            e = E(e.kind, below, e.target, e.mode, e.uid, e.xattr)
        elif how == "link":
            e = E("hardlink", e.name, draw(st.sampled_from([earlier, earlier, below])), e.mode)
        out.append(e)
    return out


layers = layer_entries()
lowers = st.lists(st.lists(lower_entry, max_size=6), max_size=2)

# --- the sandbox


def make_lower(d: str, items: list[L], jail: str) -> None:
    """Build a lower layer without following any symlink (components are checked with lstat)."""
    os.mkdir(d)
    for item in items:
        path = d
        for comp in item.parts[:-1]:
            path = os.path.join(path, comp)
            if not os.path.lexists(path):
                os.mkdir(path)
            elif not stat.S_ISDIR(os.lstat(path).st_mode):
                break
        else:
            path = os.path.join(path, item.parts[-1])
            if os.path.lexists(path):
                continue
            if item.kind in ("dir", "opaque"):
                os.mkdir(path)
                if item.kind == "opaque":
                    os.setxattr(path, OPAQUE_XATTR, b"y")
            elif item.kind == "file":
                with open(path, "xb") as f:
                    f.write(SENTINEL)
            elif item.kind == "symlink":
                os.symlink(item.target.replace(JAIL, jail) or ".", path)  # Linux has no empty symlinks
            else:
                os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


@pytest.fixture(scope="module")
def deep(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(the sandbox root, the dir at the bottom of its chain where the jails go)."""
    root = str(tmp_path_factory.mktemp("unpack-props"))
    bottom = os.path.join(root, *(f"u{i}" for i in range(DEPTH)))
    os.makedirs(bottom)
    return root, bottom


@contextmanager
def sandbox(bottom: str, lower_layers: list[list[L]]) -> Iterator[tuple[str, list[str]]]:
    """A fresh jail under ``bottom`` and its lower dirs, top-most first; removed afterwards."""
    jail = tempfile.mkdtemp(prefix="jail-", dir=bottom)
    try:
        os.makedirs(os.path.join(jail, SNAPSHOT))
        os.makedirs(os.path.join(jail, "outside", "sub"))
        for path in ("keep", "outside/keep", "outside/sub/deep", f"{os.path.dirname(SNAPSHOT)}/keep"):
            with open(os.path.join(jail, path), "wb") as f:
                f.write(SENTINEL)
        os.symlink("keep", os.path.join(jail, "outside", "link"))
        os.link(os.path.join(jail, "keep"), os.path.join(jail, "outside", "hard"))
        os.setxattr(os.path.join(jail, "outside", "keep"), "user.sentinel", b"1")
        dirs = [os.path.join(jail, f"lower{i}") for i in range(len(lower_layers))]
        for d, items in zip(dirs, lower_layers, strict=True):
            make_lower(d, items, jail)
        yield jail, dirs[::-1]
    finally:
        shutil.rmtree(jail)


def listing(root: str, skip: str) -> dict[str, tuple[Any, ...]]:
    """Every inode under ``root`` but ``skip`` (lstat, never following a link): what may not change."""
    out: dict[str, tuple[Any, ...]] = {}

    def visit(path: str) -> None:
        st = os.lstat(path)
        xattrs = sorted(
            (k, os.getxattr(path, k, follow_symlinks=False)) for k in os.listxattr(path, follow_symlinks=False)
        )
        info: tuple[Any, ...] = (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_size, st.st_ino, st.st_rdev,
                                 st.st_mtime_ns, st.st_ctime_ns, xattrs)  # fmt: skip
        if stat.S_ISLNK(st.st_mode):
            info += (os.readlink(path),)
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                info += (hashlib.sha256(f.read()).hexdigest(),)
        out[os.path.relpath(path, root)] = info
        if stat.S_ISDIR(st.st_mode):
            for name in sorted(os.listdir(path)):
                if os.path.join(path, name) != skip:
                    visit(os.path.join(path, name))

    visit(root)
    return out


REASONS = ["climbs out", "goes through the symlink", "not a directory", "does not exist", "hardlink to the",
           "is a whiteout of", "cannot set xattr"]  # fmt: skip


def check_layer(deep: tuple[str, str], layer: list[E], lower_layers: list[list[L]]) -> None:
    root, bottom = deep
    with sandbox(bottom, lower_layers) as (jail, lower_dirs), tempfile.TemporaryDirectory() as blobs:
        data = tar_bytes(layer, jail)
        blob = os.path.join(blobs, "layer.tar")
        with open(blob, "wb") as f:
            f.write(data)
        target = os.path.join(jail, SNAPSHOT)
        before = listing(root, target)
        error: Exception | None = None
        try:
            apply_layer(blob, "none", target, lower_dirs, "sha256:" + hashlib.sha256(data).hexdigest())
            outcome = "applied"
        except FailedPrecondition as exc:
            why = [w for w in REASONS if w in str(exc)]
            outcome = f"refused: {why[0] if why else exc}"
        except Exception as exc:
            error, outcome = exc, f"raised {type(exc).__name__}"
        event(outcome)  # --hypothesis-show-statistics: how many layers get through
        after = listing(root, target)
        changed = sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))
        chain = os.path.relpath(jail, root)
        assert not changed, f"outside the snapshot: {[p.replace(chain, '<jail>') for p in changed]}"
        assert stat.S_ISDIR(os.lstat(target).st_mode), "the snapshot dir itself was replaced"
        if error is not None:
            raise AssertionError(f"neither success nor FailedPrecondition: {error!r}") from error


# --- directories a layer replaces later (deferred metadata once went through such links)


@st.composite
def layers_replacing_a_dir(draw: st.DrawFn) -> list[E]:
    """A random layer with a dir entry and, later, a replacement of it or of a parent."""
    layer = draw(layers)
    comps = draw(st.lists(st.sampled_from(PLAIN), min_size=1, max_size=3))
    cut = draw(st.integers(1, len(comps)))
    kind = draw(
        st.sampled_from(["symlink", "hardlink"])
        if cut == len(comps)
        else st.sampled_from(["symlink", "file", "fifo", "whiteout"])
    )
    name = "/".join(comps[:cut])
    if kind == "whiteout":
        kind, name = "file", "/".join([*comps[: cut - 1], ".wh." + comps[cut - 1]])
    i = draw(st.integers(0, len(layer)))
    j = draw(st.integers(i, len(layer)))
    dir_entry = E("dir", "/".join(comps), mode=draw(modes), uid=draw(st.integers(0, 3)))
    replacement = E(kind, name, draw(targets))
    return [*layer[:i], dir_entry, *layer[i:j], replacement, *layer[j:]]


@given(layers, lowers)
@example([E("symlink", "evil", f"{JAIL}/outside"), E("file", "evil/pwned")], [])
@example([E("hardlink", "h", "../../outside/keep")], [])
@example([E("file", f"{JAIL}/outside/abs")], [])
@example([E("file", "lib/x")], [[L("symlink", ("lib",), f"{JAIL}/outside")]])
@example([E("file", ".wh.keep"), E("file", "link/.wh.keep")], [[L("symlink", ("link",), "../../outside")]])
@example([E("hardlink", "h", "link/keep")], [[L("symlink", ("link",), f"{JAIL}/outside")]])
@example([E("file", "../.wh.keep"), E("file", ".wh.."), E("file", f"{OPAQUE}/../../{OPAQUE}")], [])
def test_random_layers_stay_inside_the_snapshot(
    deep: tuple[str, str], layer: list[E], lower_layers: list[list[L]]
) -> None:
    check_layer(deep, layer, lower_layers)


@given(layers_replacing_a_dir(), lowers)
@example([E("dir", "d", mode=0o700), E("symlink", "d", f"{JAIL}/outside/keep")], [])
@example([E("dir", "a/sub"), E("symlink", "a", f"{JAIL}/outside")], [])
def test_dirs_replaced_later_in_the_layer_stay_inside(
    deep: tuple[str, str], layer: list[E], lower_layers: list[list[L]]
) -> None:
    check_layer(deep, layer, lower_layers)


@st.composite
def layers_with_a_long_name(draw: st.DrawFn) -> list[E]:
    """A random layer with one entry past NAME_MAX (255) or PATH_MAX (4096) somewhere."""
    layer = draw(layers)
    long = st.one_of(
        st.integers(256, 400).map(lambda n: "n" * n),
        st.integers(21, 30).map(lambda n: "/".join(["d" * 200] * n)),
    )
    kind = draw(st.sampled_from(["file", "dir", "symlink", "hardlink", "fifo"]))
    e = E(kind, draw(long), draw(long) if kind == "symlink" and draw(st.booleans()) else "a", draw(modes))
    if draw(st.booleans()):
        e = E("symlink", "s", draw(st.integers(4096, 5000).map(lambda n: "t" * n)))
    i = draw(st.integers(0, len(layer)))
    return [*layer[:i], e, *layer[i:]]


@given(layers_with_a_long_name(), lowers)
@example([E("file", "n" * 256)], [])
@example([E("symlink", "s", "t" * 4096)], [])
def test_names_past_the_kernel_limits_are_refused(
    deep: tuple[str, str], layer: list[E], lower_layers: list[list[L]]
) -> None:
    check_layer(deep, layer, lower_layers)
