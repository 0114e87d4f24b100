"""Directories discarded: gone from their place at once, deleted in the background,
and what a killed daemon left in the trash deleted at the next start."""

import os
from pathlib import Path

from cri.runtime.trash import Trash


def _tree(path: Path) -> Path:
    (path / "upper" / "etc").mkdir(parents=True)
    (path / "upper" / "etc" / "hosts").write_text("x")
    (path / "config.json").write_text("{}")
    return path


async def test_discarded_dirs_vanish_at_once_and_are_deleted(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    trash = Trash(str(root), str(state))
    a, b = _tree(root / "containers" / "a"), _tree(state / "containers" / "b")
    await trash.discard(str(a), str(b), str(root / "containers" / "never-made"))
    assert not a.exists() and not b.exists()
    await trash.drain(10)
    assert os.listdir(root / "trash") == [] and os.listdir(state / "trash") == []


async def test_a_dir_outside_the_tops_is_deleted_in_place(tmp_path: Path) -> None:
    trash = Trash(str(tmp_path / "root"))
    elsewhere = _tree(tmp_path / "elsewhere")
    await trash.discard(str(elsewhere))
    assert not elsewhere.exists()
    assert not (tmp_path / "root" / "trash").exists()


async def test_what_a_killed_daemon_left_is_deleted_at_start(tmp_path: Path) -> None:
    left = _tree(tmp_path / "root" / "trash" / "c1.0123abcd")
    trash = Trash(str(tmp_path / "root"), str(tmp_path / "state"))  # no trash dir under state: fine
    trash.recover()
    await trash.drain(10)
    assert not left.exists()
