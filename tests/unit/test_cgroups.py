"""Pod cgroups (cri/runtime/cgroups.py) on a fake v1 tree: what crid plans to own is what it makes."""

from pathlib import Path

from cri.runtime import cgroups


def fake_root(tmp: Path) -> str:
    for name in ("cpu", "memory"):
        (tmp / name).mkdir()
    return str(tmp)


def test_planned_is_what_ensure_then_owns(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    plan = cgroups.planned("/kubepods/pod1", root=root)
    assert plan == [f"{root}/{h}/{d}" for h in ("cpu", "memory") for d in ("kubepods", "kubepods/pod1")]
    assert cgroups.ensure("/kubepods/pod1", root=root) == plan
    assert cgroups.planned("/kubepods/pod1", root=root) == []  # all there now, none of it crid's to claim


def test_planned_leaves_out_what_others_made_and_keeps_what_pods_share(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    (tmp_path / "cpu" / "kubepods").mkdir()  # kubelet's
    assert cgroups.planned("/kubepods/pod2", root=root) == [
        f"{root}/cpu/kubepods/pod2",
        f"{root}/memory/kubepods",
        f"{root}/memory/kubepods/pod2",
    ]
    shared = {f"{root}/cpu/kubepods"}  # made by crid for a pod still alive
    assert f"{root}/cpu/kubepods" in cgroups.planned("/kubepods/pod2", shared, root=root)
    assert cgroups.planned("/", root=root) == []


def test_removing_a_plan_never_made_is_fine(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    cgroups.remove(cgroups.planned("/kubepods/pod3", root=root))  # recovery after a crash before ensure
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cpu", "memory"]
