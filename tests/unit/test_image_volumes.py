"""Image volume sub-paths resolve inside the image's tree, as if it were the
container's root: no symlink or ``..`` leads out of it."""

import os
from pathlib import Path

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.runtime.image_volumes import check_mount, resolve_in_root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    (root / "data" / "nested").mkdir(parents=True)
    (root / "data" / "nested" / "f").write_text("x")
    (root / "etc").mkdir()
    os.symlink("data/nested", root / "rel")
    os.symlink("/data", root / "abs")  # absolute: from the tree's root
    os.symlink("../../../../..", root / "data" / "up")  # climbs no higher than the root
    os.symlink("/../../etc", root / "escape")
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    (tmp_path / "outside").mkdir()
    os.symlink(str(tmp_path / "outside"), root / "host")  # a host path: means the tree's own /tmp/...
    return root


@pytest.mark.parametrize(
    ("sub", "want"),
    [
        ("", ""),
        ("data", "data"),
        ("/data/nested/", "data/nested"),
        ("rel/f", "data/nested/f"),
        ("abs/nested", "data/nested"),
        ("data/up/etc", "etc"),
        ("../../etc", "etc"),
        ("escape", "etc"),
        ("./data/./nested/../nested", "data/nested"),
    ],
)
def test_resolves_inside(tree: Path, sub: str, want: str) -> None:
    got = resolve_in_root(str(tree), sub)
    assert got == os.path.join(str(tree), *[c for c in want.split("/") if c])
    assert os.path.realpath(got).startswith(str(tree))


@pytest.mark.parametrize("sub", ["missing", "data/nested/f/x", "loop1", "host", "escape/passwd"])
def test_missing_or_outside(tree: Path, sub: str) -> None:
    with pytest.raises(FileNotFoundError):
        resolve_in_root(str(tree), sub)


def test_mount_checks() -> None:
    image = pb.ImageSpec(image="data:1")
    check_mount(pb.Mount(container_path="/v", image=image, readonly=True))
    bad = [
        pb.Mount(container_path="/v", image=image, readonly=False),
        pb.Mount(container_path="/v", image=image, readonly=True, host_path="/tmp"),
        pb.Mount(container_path="/v", image=image, readonly=True, propagation=pb.PROPAGATION_BIDIRECTIONAL),
        pb.Mount(container_path="/v", image=image, readonly=True, recursive_read_only=True),
        pb.Mount(container_path="/v", image=image, readonly=True, uidMappings=[pb.IDMapping(length=1)]),
    ]
    for m in bad:
        with pytest.raises(InvalidArgument):
            check_mount(m)
