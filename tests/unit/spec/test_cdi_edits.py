"""CDI devices in the spec: each kind of container edit, as the CDI library applies it."""

import json
import os
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import FailedPrecondition, InvalidArgument
from cri.runtime.cdi import Registry
from cri.runtime.spec.build import build_spec
from tests.unit.spec.helpers import cc, check_oci, make, pod, sec

BASE_MOUNTS = ["/proc", "/dev", "/dev/pts", "/dev/mqueue", "/sys", "/sys/fs/cgroup"]


def registry(env: Path, spec_edits: dict[str, Any] | None = None, **devices: dict[str, Any]) -> Registry:
    cdi = env / "cdi"
    cdi.mkdir(exist_ok=True)
    doc: dict[str, Any] = {
        "cdiVersion": "0.7.0",
        "kind": "example.com/dev",
        "devices": [{"name": n, "containerEdits": e} for n, e in devices.items()],
    }
    if spec_edits:
        doc["containerEdits"] = spec_edits
    (cdi / "dev.json").write_text(json.dumps(doc))
    return Registry([str(cdi)])


def build(env: Path, reg: Registry, config: pb.ContainerConfig | None = None, **kw: Any) -> dict[str, Any]:
    doc: dict[str, Any] = dict(build_spec(make(env, config, **kw), reg))
    check_oci(doc)
    return doc


def cdi(*names: str, **kw: Any) -> pb.ContainerConfig:
    return cc(CDI_devices=[pb.CDIDevice(name=n) for n in names], **kw)


def test_device_nodes_from_host_with_cgroup_rules(env: Path) -> None:
    reg = registry(
        env,
        zero={"deviceNodes": [{"path": "/dev/cdi-zero", "hostPath": "/dev/zero"}]},
        null={"deviceNodes": [{"path": "/dev/null", "permissions": "rw", "fileMode": 0o600, "uid": 7, "gid": 8}]},
        fixed={"deviceNodes": [{"path": "/dev/fixed", "type": "b", "major": 250, "minor": 3, "permissions": "none"}]},
    )
    doc = build(env, reg, cdi("example.com/dev=zero", "example.com/dev=null", "example.com/dev=fixed"))
    assert doc["linux"]["devices"] == [
        {"path": "/dev/cdi-zero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
        {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600, "uid": 7, "gid": 8},
        # fully specified: no host node needed, nothing taken from one
        {"path": "/dev/fixed", "type": "b", "major": 250, "minor": 3},
    ]
    assert doc["linux"]["resources"]["devices"][-3:] == [
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
        {"allow": True, "type": "b", "major": 250, "minor": 3},  # "none": no access (Go omits the empty key)
    ]


def test_device_node_owned_by_the_container_user(env: Path) -> None:
    reg = registry(env, zero={"deviceNodes": [{"path": "/dev/z", "hostPath": "/dev/zero", "fileMode": 0o640}]})
    config = cdi("example.com/dev=zero", linux=sec(run_as_user=pb.Int64Value(value=1000)))
    (dev,) = build(env, reg, config)["linux"]["devices"]
    assert dev == {"path": "/dev/z", "type": "c", "major": 1, "minor": 5, "fileMode": 0o640, "uid": 1000, "gid": 1000}


def test_device_node_replaces_a_cri_device_at_the_same_path(env: Path) -> None:
    reg = registry(env, zero={"deviceNodes": [{"path": "/dev/x", "hostPath": "/dev/zero"}]})
    config = cdi("example.com/dev=zero", devices=[pb.Device(host_path="/dev/null", container_path="/dev/x")])
    assert [(d["path"], d["minor"]) for d in build(env, reg, config)["linux"]["devices"]] == [("/dev/x", 5)]


def test_device_node_for_a_privileged_container(env: Path) -> None:
    reg = registry(env, zero={"deviceNodes": [{"path": "/dev/cdi-zero", "hostPath": "/dev/zero"}]})
    config = cdi("example.com/dev=zero", linux=sec(privileged=True))
    doc = build(env, reg, config, sandbox=pod(privileged=True))
    assert doc["linux"]["devices"][-1]["path"] == "/dev/cdi-zero"
    assert doc["linux"]["resources"]["devices"] == [
        {"allow": True, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    ]


@pytest.mark.parametrize(
    ("node", "error"),
    [
        ({"path": "/dev/none", "hostPath": "/nonexistent/dev"}, 'failed to stat CDI host device "/nonexistent/dev"'),
        ({"path": "/dev/x", "hostPath": "/etc/hostname"}, "not a device node"),
        ({"path": "/dev/x", "hostPath": "/dev/zero", "type": "b"}, "host type mismatch (b, c)"),
    ],
)
def test_device_node_host_errors(env: Path, node: dict[str, Any], error: str) -> None:
    reg = registry(env, d={"deviceNodes": [node]})
    with pytest.raises(FailedPrecondition) as exc:
        build(env, reg, cdi("example.com/dev=d"))
    assert str(exc.value).startswith("CDI device injection failed: ") and error in str(exc.value)


def test_env_spec_edits_first_and_replacing(env: Path) -> None:
    reg = registry(
        env,
        {"env": ["SPEC=1", "HOSTNAME=cdi"]},
        a={"env": ["A=1", "SPEC=from-a"]},
        b={"env": ["B=2"]},
    )
    doc = build(env, reg, cdi("example.com/dev=b", "example.com/dev=a", envs=[pb.KeyValue(key="MINE", value=b"x")]))
    assert doc["process"]["env"] == ["PATH=/bin:/usr/bin", "HOSTNAME=cdi", "MINE=x", "SPEC=from-a", "B=2", "A=1"]


def test_mounts_appended_replacing_and_sorted_by_depth(env: Path) -> None:
    reg = registry(
        env,
        d={
            "mounts": [
                {"hostPath": "/srv/lib", "containerPath": "/usr/lib/vendor", "options": ["ro", "nosuid", "bind"]},
                {"hostPath": "/srv/hosts", "containerPath": "/etc/hosts", "type": "bind", "options": ["bind"]},
                {"hostPath": "tmpfs", "containerPath": "/scratch", "type": "tmpfs"},
            ]
        },
    )
    mounts = build(env, reg, cdi("example.com/dev=d"))["mounts"]
    assert [m["destination"] for m in mounts] == [
        "/proc", "/dev", "/sys", "/scratch",
        "/dev/pts", "/dev/mqueue", "/etc/hostname", "/etc/resolv.conf", "/dev/shm", "/etc/hosts",
        "/sys/fs/cgroup", "/usr/lib/vendor",
    ]  # fmt: skip
    assert mounts[-1] == {"destination": "/usr/lib/vendor", "source": "/srv/lib", "options": ["ro", "nosuid", "bind"]}
    assert mounts[3] == {"destination": "/scratch", "source": "tmpfs", "type": "tmpfs"}
    assert mounts[9] == {"destination": "/etc/hosts", "source": "/srv/hosts", "type": "bind", "options": ["bind"]}


def test_hooks(env: Path) -> None:
    hooks = [
        {"hookName": name, "path": f"/usr/bin/{name}", "args": [name, "-v"], "env": ["X=1"], "timeout": 3}
        for name in ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
    ]
    reg = registry(env, {"hooks": [{"hookName": "createRuntime", "path": "/bin/first"}]}, d={"hooks": hooks})
    doc = build(env, reg, cdi("example.com/dev=d"))
    assert doc["hooks"] == {
        "prestart": [{"path": "/usr/bin/prestart", "args": ["prestart", "-v"], "env": ["X=1"], "timeout": 3}],
        "createRuntime": [
            {"path": "/bin/first"},
            {"path": "/usr/bin/createRuntime", "args": ["createRuntime", "-v"], "env": ["X=1"], "timeout": 3},
        ],
        "createContainer": [
            {"path": "/usr/bin/createContainer", "args": ["createContainer", "-v"], "env": ["X=1"], "timeout": 3}
        ],
        "startContainer": [
            {"path": "/usr/bin/startContainer", "args": ["startContainer", "-v"], "env": ["X=1"], "timeout": 3}
        ],
        "poststart": [{"path": "/usr/bin/poststart", "args": ["poststart", "-v"], "env": ["X=1"], "timeout": 3}],
        "poststop": [{"path": "/usr/bin/poststop", "args": ["poststop", "-v"], "env": ["X=1"], "timeout": 3}],
    }


def test_additional_gids_once_and_not_zero(env: Path) -> None:
    reg = registry(env, {"additionalGids": [0, 44]}, a={"additionalGids": [44, 45]}, b={"additionalGids": [46]})
    user = build(env, reg, cdi("example.com/dev=a", "example.com/dev=b"))["process"]["user"]
    assert user == {"uid": 0, "gid": 0, "additionalGids": [0, 44, 45, 46]}


def test_intel_rdt_and_net_devices(env: Path) -> None:
    (env / "cdi").mkdir()
    doc = {
        "cdiVersion": "1.1.0",
        "kind": "example.com/net",
        "devices": [
            {
                "name": "eth",
                "containerEdits": {
                    "netDevices": [{"hostInterfaceName": "enp1", "name": "eth1"}],
                    "intelRdt": {"closID": "gold", "schemata": ["L3:0=ff"]},
                },
            }
        ],
    }
    (env / "cdi" / "net.yaml").write_text(json.dumps(doc))
    linux = build(env, Registry([str(env / "cdi")]), cdi("example.com/net=eth"))["linux"]
    assert linux["netDevices"] == {"enp1": {"name": "eth1"}}
    assert linux["intelRdt"] == {"closID": "gold", "schemata": ["L3:0=ff"]}


def test_no_cdi_devices_no_edits(env: Path) -> None:
    reg = registry(env, {"env": ["SPEC=1"]}, d={"env": ["D=1"]})
    doc = build(env, reg)
    assert "SPEC=1" not in doc["process"]["env"] and "hooks" not in doc


def test_unknown_device_fails_naming_it(env: Path) -> None:
    reg = registry(env, zero={"env": ["Z=1"]})
    with pytest.raises(InvalidArgument) as exc:
        build(env, reg, cdi("example.com/dev=zero", "example.com/dev=gpu9"))
    assert str(exc.value) == "CDI device injection failed: unresolvable CDI devices 'example.com/dev=gpu9'"


def test_annotations_request_devices(env: Path) -> None:
    reg = registry(env, a={"env": ["A=1"]}, b={"env": ["B=1"]})
    config = cdi("example.com/dev=a", annotations={"cdi.k8s.io/plugin": "example.com/dev=b,example.com/dev=a"})
    doc = build(env, reg, config)
    assert doc["process"]["env"][-2:] == ["A=1", "B=1"]
    assert doc["annotations"]["cdi.k8s.io/plugin"] == "example.com/dev=b,example.com/dev=a"


def test_pod_annotations_request_nothing(env: Path) -> None:
    reg = registry(env, a={"env": ["A=1"]})
    sandbox = make(env).sandbox_config
    sandbox.annotations["cdi.k8s.io/plugin"] = "example.com/dev=a"
    assert "A=1" not in build(env, reg, sandbox=sandbox)["process"]["env"]


def test_host_device_file_mode_kept(env: Path) -> None:
    reg = registry(env, n={"deviceNodes": [{"path": "/dev/n", "hostPath": "/dev/null"}]})
    (dev,) = build(env, reg, cdi("example.com/dev=n"))["linux"]["devices"]
    assert dev["fileMode"] == os.stat("/dev/null").st_mode & 0o7777
