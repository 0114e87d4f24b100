"""A container's bundle is made in one blocking call: dirs, rootfs mount, spec, config.json."""

import os
import stat
from pathlib import Path
from typing import Any, cast

import pytest

from cri.runtime.bundle import BundleDirs, make_bundle, read_json
from cri.runtime.spec import SpecInputs
from cri.runtime.spec.types import Spec


def _mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_bundle_is_made_in_order_and_its_spec_written(tmp_path: Path) -> None:
    dirs = BundleDirs(str(tmp_path / "state" / "c1"), str(tmp_path / "root" / "c1"))
    seen: list[str] = []
    inputs = cast(SpecInputs, object())

    def mount(rootfs: str, upper: str, work: str) -> None:
        assert (rootfs, upper, work) == (dirs.rootfs, dirs.upper, dirs.work)
        assert all(os.path.isdir(d) for d in (rootfs, upper, work)), "the dirs come before the mount"
        seen.append("mount")

    def build(given: SpecInputs) -> Spec:
        assert given is inputs
        seen.append("build")
        return cast(Spec, {"ociVersion": "1.0.2", "mounts": [{"destination": "/x", "type": "bind"}]})

    def finish(spec: Spec) -> None:
        seen.append("finish")
        cast(dict[str, Any], spec)["mounts"][0]["source"] = "/mapped"

    spec = make_bundle(dirs, mount, build, inputs, finish)
    assert seen == ["mount", "build", "finish"]
    written = read_json(os.path.join(dirs.bundle, "config.json"))
    assert written == spec and cast(dict[str, Any], written)["mounts"][0]["source"] == "/mapped"
    assert sorted(os.listdir(dirs.bundle)) == ["config.json", "rootfs"], "no temporary file is left"
    assert (_mode(dirs.upper), _mode(dirs.work), _mode(dirs.rootfs)) == (0o755, 0o700, 0o700)


def test_a_failed_mount_writes_no_spec(tmp_path: Path) -> None:
    dirs = BundleDirs(str(tmp_path / "b"), str(tmp_path / "p"))

    def mount(rootfs: str, upper: str, work: str) -> None:
        raise OSError(16, "mount: busy")

    def build(given: SpecInputs) -> Spec:
        raise AssertionError("no spec without a rootfs")

    with pytest.raises(OSError, match="busy"):
        make_bundle(dirs, mount, build, cast(SpecInputs, None))
    assert not os.path.exists(os.path.join(dirs.bundle, "config.json"))
