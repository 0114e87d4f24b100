"""The spec's devices and device cgroup rules."""

import os
from pathlib import Path

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from tests.unit.spec.helpers import build, cc


def test_default_device_rules(env: Path) -> None:
    linux = build(env)["linux"]
    rules = linux["resources"]["devices"]
    assert rules[0] == {"allow": False, "access": "rwm"}
    allowed = {(r["type"], r["major"], r.get("minor")) for r in rules[1:] if r["allow"]}
    assert {
        ("c", 1, 3),
        ("c", 1, 5),
        ("c", 1, 7),
        ("c", 1, 8),
        ("c", 1, 9),
        ("c", 5, 0),
        ("c", 5, 2),
        ("c", 136, None),
    } <= allowed
    assert "devices" not in linux


def test_cri_device(env: Path) -> None:
    config = cc(devices=[pb.Device(host_path="/dev/null", container_path="/dev/mynull", permissions="rw")])
    linux = build(env, config)["linux"]
    (dev,) = linux["devices"]
    assert (dev["path"], dev["type"], dev["major"], dev["minor"]) == ("/dev/mynull", "c", 1, 3)
    assert {"fileMode", "uid", "gid"} <= set(dev)
    assert linux["resources"]["devices"][-1] == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}


def test_cri_device_symlink_and_default_permissions(env: Path) -> None:
    (env / "nul").symlink_to("/dev/null")
    linux = build(env, cc(devices=[pb.Device(host_path=str(env / "nul"), container_path="/dev/x")]))["linux"]
    assert linux["devices"][0]["major"] == 1 and linux["resources"]["devices"][-1]["access"] == "rwm"


def test_cri_device_directory(env: Path) -> None:
    d = env / "devdir"
    d.mkdir()
    (d / "link").symlink_to("/dev/null")  # not a device node itself: skipped, like containerd
    (d / "file").write_text("")
    if os.geteuid() == 0:
        os.mknod(d / "zero", 0o600 | 0o020000, os.makedev(1, 5))
    linux = build(env, cc(devices=[pb.Device(host_path=str(d), container_path="/dev/in", permissions="r")]))["linux"]
    if os.geteuid() == 0:
        assert [(x["path"], x["minor"]) for x in linux["devices"]] == [("/dev/in/zero", 5)]
    else:
        assert "devices" not in linux


@pytest.mark.parametrize(
    ("device", "match"),
    [
        (pb.Device(host_path="/nonexistent/dev", container_path="/dev/x"), "does not exist"),
        (pb.Device(host_path="/etc/hostname", container_path="/dev/x"), "not a device"),
        (pb.Device(host_path="/dev/null", container_path="/dev/x", permissions="rwx"), "permissions"),
        (pb.Device(host_path="/dev/null", container_path="dev/x"), "absolute"),
    ],
)
def test_cri_device_errors(env: Path, device: pb.Device, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        build(env, cc(devices=[device]))
