"""CDI spec files: parsing and validation (JSON and YAML), the registry's name
resolution, override order and reload on change, and the requested devices."""

import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.runtime.cdi import Registry, requested_devices
from cri.runtime.cdi.schema import SpecError, check_qualified_name, parse_spec, required_version

ZERO = {"deviceNodes": [{"path": "/dev/cdi-zero", "hostPath": "/dev/zero"}]}


def spec(kind: str = "example.com/dev", version: str = "0.7.0", **devices: dict[str, Any]) -> dict[str, Any]:
    return {
        "cdiVersion": version,
        "kind": kind,
        "devices": [{"name": n, "containerEdits": e} for n, e in (devices or {"zero": ZERO}).items()],
    }


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def parse(doc: Any, name: str = "/etc/cdi/x.json") -> Any:
    return parse_spec(name, json.dumps(doc).encode())


# --- parsing and validation ---------------------------------------------------------


def test_json_and_yaml_parse_alike() -> None:
    yaml_text = b"""\
cdiVersion: "0.7.0"
kind: example.com/dev
containerEdits:
  env: [SHARED=1]
devices:
- name: zero
  containerEdits:
    deviceNodes:
    - path: /dev/cdi-zero
      hostPath: /dev/zero
      permissions: rw
    mounts:
    - {hostPath: /srv, containerPath: /srv, options: [ro, bind]}
    hooks:
    - {hookName: createRuntime, path: /bin/true, args: [x], timeout: 5}
    additionalGids: [7]
"""
    from_yaml = parse_spec("/etc/cdi/x.yaml", yaml_text)
    node = from_yaml.devices[0].containerEdits.deviceNodes[0]
    assert (node.path, node.hostPath, node.permissions, node.fileMode) == ("/dev/cdi-zero", "/dev/zero", "rw", None)
    assert from_yaml.containerEdits.env == ["SHARED=1"]
    assert from_yaml.devices[0].containerEdits.hooks[0].timeout == 5
    as_json = msgspec.json.encode(from_yaml)
    assert parse_spec("/etc/cdi/x.json", as_json) == from_yaml


def test_yaml_octal_file_mode() -> None:
    text = b"cdiVersion: 0.5.0\nkind: a.com/b\ndevices:\n- name: d\n  containerEdits:\n    deviceNodes:\n"
    text += b"    - {path: /dev/x, type: c, major: 1, minor: 3, fileMode: 0640}\n"
    assert parse_spec("/etc/cdi/a.yaml", text).devices[0].containerEdits.deviceNodes[0].fileMode == 0o640


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({**spec(), "cdiVersion": "9.9.9"}, 'invalid version "9.9.9"'),
        (spec(version="0.2.0", d={"env": ["A=1"]}), "the spec version must be at least v0.3.0"),
        (spec(version="0.4.0"), "the spec version must be at least v0.5.0"),  # hostPath came in 0.5.0
        (spec(kind="example"), "invalid vendor. empty name"),
        (spec(kind="example.com/a/b"), "invalid character '/' in name \"a/b\""),
        (spec(kind="1example.com/dev"), 'invalid vendor. "1example.com", should start with letter'),
        (spec(kind="example.com/dev-"), 'invalid class. "dev-", should end with a letter or digit'),
        (
            {**spec(), "devices": [{"name": "bad name", "containerEdits": ZERO}]},
            "failed add device \"bad name\": invalid character ' ' in device name",
        ),
        (spec(empty={}), 'failed add device "empty": invalid device, empty device edits'),
        ({**spec(), "devices": []}, "invalid spec, no devices"),
        ({**spec(), "devices": spec()["devices"] * 2}, 'invalid spec, multiple device "zero"'),
        (spec(d={"env": ["=x"]}), 'invalid device "d": invalid container edits: invalid environment variable "=x"'),
        (spec(d={"deviceNodes": [{"path": ""}]}), "invalid (empty) device path"),
        (spec(d={"deviceNodes": [{"path": "/dev/x", "type": "z"}]}), 'device "/dev/x": invalid type "z"'),
        (spec(d={"deviceNodes": [{"path": "/x", "permissions": "rx"}]}), 'device "/x": invalid permissions "rx"'),
        (spec(d={"hooks": [{"hookName": "later", "path": "/x"}]}), 'invalid hook name "later"'),
        (spec(d={"hooks": [{"hookName": "poststop"}]}), 'invalid hook "poststop" with empty path'),
        (spec(d={"mounts": [{"containerPath": "/x"}]}), "invalid mount, empty host path"),
        (spec(d={"mounts": [{"hostPath": "/x"}]}), "invalid mount, empty container path"),
        (
            spec(d={"deviceNodes": [{"path": "/x", "mystery": 1}]}),
            "unknown field `mystery` - at `$.devices[0].containerEdits.deviceNodes[0]`",
        ),
        (spec(d={"deviceNodes": [{"path": "/x", "major": "1"}]}), "Expected `int`, got `str` - at `$.devices[0]"),
        (spec(d={"additionalGids": [-1]}), "Expected `int` >= 0 - at `$.devices[0].containerEdits.additionalGids[0]`"),
        ({**spec(), "kind": 5}, "Expected `str`, got `int` - at `$.kind`"),
        ([1], "not an object"),
        (None, "no Spec data"),
    ],
)
def test_invalid_specs(doc: Any, error: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse(doc)
    assert error in str(exc.value)


def test_not_yaml() -> None:
    with pytest.raises(SpecError, match=r'failed to parse CDI Spec "/etc/cdi/x\.yaml": failed to unmarshal'):
        parse_spec("/etc/cdi/x.yaml", b"kind: [unclosed")


def test_required_versions() -> None:
    assert required_version(parse(spec(version="1.1.0", d={"netDevices": [{"hostInterfaceName": "e", "name": "f"}]})))
    assert required_version(parse(spec(kind="a.com/b.c", version="0.6.0"))) == "0.6.0"  # dots in the class
    assert required_version(parse(spec(version="0.7.0", d={"additionalGids": [1]}))) == "0.7.0"
    mount = {"mounts": [{"hostPath": "/a", "containerPath": "/a", "type": "bind"}]}
    assert required_version(parse(spec(version="0.4.0", d=mount))) == "0.4.0"
    assert required_version(parse(spec(version="v0.3.0", d={"env": ["A=1"]}))) == "0.3.0"


@pytest.mark.parametrize("name", ["vendor.com/class=name", "a/b=0", "nvidia.com/gpu=GPU-1234:0", "a_b-c.d/e_f=g.h"])
def test_qualified_names(name: str) -> None:
    check_qualified_name(name)


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("gpu0", "unqualified device"),
        ("/dev/gpu0", "unqualified device"),
        ("vendor.com/class=", "unqualified device"),
        ("vendor.com/class=-x", "should start with a letter or digit"),
        ("vendor.com/cl!ass=x", "invalid character '!'"),
        ("", "unqualified device"),
    ],
)
def test_unqualified_names(name: str, error: str) -> None:
    with pytest.raises(SpecError, match=error):
        check_qualified_name(name)


# --- the registry -------------------------------------------------------------------


def test_resolution_and_errors(tmp_path: Path) -> None:
    write(tmp_path / "etc" / "dev.json", spec(zero=ZERO, null={"env": ["NULL=1"]}))
    write(tmp_path / "etc" / "bad.json", spec(kind="nokind"))
    (tmp_path / "etc" / "notes.txt").write_text("not a spec")
    (tmp_path / "etc" / "sub.json").mkdir()  # a dir is no spec file
    reg = Registry([str(tmp_path / "etc"), str(tmp_path / "missing")])
    status = reg.status()
    assert status["devices"] == ["example.com/dev=null", "example.com/dev=zero"]
    assert status["errors"] == {str(tmp_path / "etc" / "bad.json"): ["invalid CDI Spec: invalid vendor. empty name"]}
    assert status["specDirs"] == [str(tmp_path / "etc"), str(tmp_path / "missing")]
    parts = reg.edits_for(["example.com/dev=null", "example.com/dev=zero"])
    # the spec's own edits once, before its first device's
    assert [p.env for p in parts] == [[], ["NULL=1"], []]
    with pytest.raises(InvalidArgument) as exc:
        reg.edits_for(["example.com/dev=zero", "example.com/dev=one", "other.com/x=y"])
    assert str(exc.value) == (
        "CDI device injection failed: unresolvable CDI devices 'example.com/dev=one', 'other.com/x=y'"
    )


def test_later_dir_overrides_and_same_dir_conflicts(tmp_path: Path) -> None:
    etc, run = tmp_path / "etc", tmp_path / "run"
    write(etc / "a.json", spec(zero={"env": ["FROM=etc"]}, only={"env": ["ONLY=etc"]}))
    write(run / "a.json", spec(zero={"env": ["FROM=run"]}))
    reg = Registry([str(etc), str(run)])
    assert [p.env for p in reg.edits_for(["example.com/dev=zero"])][-1] == ["FROM=run"]
    assert reg.edits_for(["example.com/dev=only"])[-1].env == ["ONLY=etc"]

    write(run / "b.yaml", spec(zero={"env": ["FROM=run-b"]}))  # the same device twice in one dir
    status = reg.status()
    assert "example.com/dev=zero" not in status["devices"]
    msg = f'conflicting device "example.com/dev=zero" (specs "{run / "b.yaml"}", "{run / "a.json"}")'
    assert status["errors"] == {str(run / "a.json"): [msg], str(run / "b.yaml"): [msg]}
    with pytest.raises(InvalidArgument, match="unresolvable"):
        reg.edits_for(["example.com/dev=zero"])


def test_reload_on_change(tmp_path: Path) -> None:
    reg = Registry([str(tmp_path)])
    assert reg.status()["devices"] == []
    path = write(tmp_path / "a.json", spec(zero={"env": ["V=1"]}))
    assert reg.edits_for(["example.com/dev=zero"])[-1].env == ["V=1"]
    write(path, spec(zero={"env": ["V=22"]}))
    assert reg.edits_for(["example.com/dev=zero"])[-1].env == ["V=22"]
    # an edit that keeps the size and the mtime tick is still seen: the inode changes on a rename
    tmp = write(tmp_path / "a.json.tmp", spec(zero={"env": ["V=33"]}))
    st = path.stat()
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    tmp.rename(path)
    assert reg.edits_for(["example.com/dev=zero"])[-1].env == ["V=33"]
    path.write_text("{")  # broken: the device is gone, the error kept
    status = reg.status()
    assert status["devices"] == [] and list(status["errors"]) == [str(path)]
    path.unlink()
    assert reg.status() == {"specDirs": [str(tmp_path)], "devices": [], "errors": {}}


def test_unchanged_files_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cri.runtime.cdi import registry, schema

    write(tmp_path / "a.json", spec())
    reads: list[str] = []

    def read(path: str) -> schema.Spec:
        reads.append(path)
        return schema.read_spec(path)

    monkeypatch.setattr(registry, "read_spec", read)
    reg = Registry([str(tmp_path)])
    for _ in range(3):
        reg.edits_for(["example.com/dev=zero"])
    write(tmp_path / "b.json", spec(kind="other.com/dev"))
    reg.status()
    assert reads == [str(tmp_path / "a.json"), str(tmp_path / "b.json")]


def test_no_spec_dirs_resolves_nothing() -> None:
    with pytest.raises(InvalidArgument, match=r"unresolvable CDI devices 'a\.com/b=c'"):
        Registry([]).edits_for(["a.com/b=c"])


# --- the devices a container asks for -----------------------------------------------


def test_requested_devices_field_then_annotations() -> None:
    config = pb.ContainerConfig(
        CDI_devices=[pb.CDIDevice(name="a.com/x=1"), pb.CDIDevice(name="a.com/x=1"), pb.CDIDevice(name="b.com/y=2")],
        annotations={
            "cdi.k8s.io/z-plugin": "c.com/z=3,a.com/x=1",
            "cdi.k8s.io/a-plugin": "d.com/w=4",
            "other.io/x": "not=cdi",
        },
    )
    assert requested_devices(config) == ["a.com/x=1", "b.com/y=2", "d.com/w=4", "c.com/z=3"]
    assert requested_devices(pb.ContainerConfig()) == []


@pytest.mark.parametrize("value", ["gpu0", "a.com/x=1,", "a.com/x=1, b.com/y=2"])
def test_bad_annotation(value: str) -> None:
    config = pb.ContainerConfig(annotations={"cdi.k8s.io/p": value})
    with pytest.raises(InvalidArgument, match="failed to parse CDI device annotations: invalid CDI device name"):
        requested_devices(config)
