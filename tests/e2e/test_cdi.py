"""CDI devices end to end: spec files written into temporary spec dirs, a real
crid, busybox containers under runc; each edit is checked from inside the
container (device nodes of real host devices, env, a mount, groups, a hook)."""

import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from cri.api.v1 import api_pb2 as pb
from tests.e2e.container_pod import Pod
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support.registry import Registry

LOOP = "/dev/loop0" if os.path.exists("/dev/loop0") and stat.S_ISBLK(os.stat("/dev/loop0").st_mode) else ""


@dataclass
class Env:
    d: CridProcess
    image: str
    etc: Path  # the first spec dir
    run: Path  # the second one, which overrides it
    share: Path  # a host dir a CDI spec mounts
    hook_out: Path  # what the CDI hook writes
    runtime_log: Path  # the runc wrapper's: one line of arguments per command


def devices_spec(env: Env) -> dict[str, Any]:
    devices: list[dict[str, Any]] = [
        {"name": "zero", "containerEdits": {"deviceNodes": [{"path": "/dev/cdi-zero", "hostPath": "/dev/zero"}]}},
        {
            "name": "null",
            "containerEdits": {
                "deviceNodes": [{"path": "/dev/cdi-null", "hostPath": "/dev/null"}],
                "env": ["NULL_FROM=etc"],
            },
        },
        {
            "name": "share",
            "containerEdits": {
                "mounts": [
                    {
                        "hostPath": str(env.share),
                        "containerPath": "/cdi/share",
                        "type": "bind",
                        "options": ["ro", "rbind"],
                    }
                ],
                "env": ["SHARE=yes"],
                "additionalGids": [4321],
                "hooks": [
                    {
                        "hookName": "createRuntime",
                        "path": "/bin/sh",
                        "args": ["sh", "-c", f'echo "$CDI_HOOK" > {env.hook_out}'],
                        "env": ["CDI_HOOK=ran"],
                    }
                ],
            },
        },
    ]
    poststart = {
        "hookName": "poststart",
        "path": "/bin/sh",
        "args": ["sh", "-c", f"echo $$ > {env.hook_out}.poststart"],
    }
    devices.append({"name": "poststart", "containerEdits": {"hooks": [poststart]}})
    if LOOP:
        node = {"path": "/dev/cdi-loop", "hostPath": LOOP, "permissions": "r"}
        devices.append({"name": "loop", "containerEdits": {"deviceNodes": [node]}})
    return {
        "cdiVersion": "0.7.0",
        "kind": "example.com/dev",
        "containerEdits": {"env": ["CDI_VENDOR=example"]},
        "devices": devices,
    }


@pytest.fixture(scope="module")
def env(e2e_base: Path) -> Iterator[Env]:
    base = Path(tempfile.mkdtemp(prefix="cdi", dir=e2e_base))
    etc, run, share = base / "etc-cdi", base / "run-cdi", base / "share"
    for directory in (etc, run, share):
        directory.mkdir()
    (share / "hello").write_text("from the host\n")
    image = ob.Image([ob.busybox_layer("gzip", applets="all")], ob.ImageConfig(cmd=["sh"], env=["PATH=/bin"]))
    with Registry(base / "reg") as reg:
        reg.push("e2e/busybox", "1", image)
        wrapper, runtime_log = base / "runc-logged", base / "runc.log"
        wrapper.write_text(f'#!/bin/sh\necho "$*" >> {runtime_log}\nexec /usr/sbin/runc "$@"\n')
        wrapper.chmod(0o755)
        settings = {
            "cdi": {"spec_dirs": [str(etc), str(run)]},
            "runtime": {"handlers": {"runc": {"binary": str(wrapper)}}},
        }
        d = CridProcess(base, settings=settings).start()
        ref = f"{reg.host}/e2e/busybox:1"
        d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)
        e = Env(d, ref, etc, run, share, base / "hook-out", runtime_log)
        (etc / "dev.json").write_text(json.dumps(devices_spec(e)))
        # the second dir overrides one device of the first
        override = {
            "cdiVersion": "0.5.0",
            "kind": "example.com/dev",
            "devices": [
                {
                    "name": "null",
                    "containerEdits": {
                        "deviceNodes": [
                            {"path": "/dev/cdi-null", "hostPath": "/dev/null", "permissions": "rw", "fileMode": 0o620}
                        ],
                        "env": ["NULL_FROM=run"],
                    },
                }
            ],
        }
        (run / "dev.yaml").write_text(yaml.safe_dump(override))
        try:
            yield e
        finally:
            d.remove_all_pods()
            d.stop()


@pytest.fixture
def pod(env: Env, request: pytest.FixtureRequest) -> Iterator[Pod]:
    host_net = pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=pb.NODE))
    p = Pod(env.d, env.image, request.node.name.replace("_", "-")[:50].lower(), security_context=host_net)
    try:
        yield p
    finally:
        p.remove()


def devices(*names: str) -> list[pb.CDIDevice]:
    return [pb.CDIDevice(name=f"example.com/dev={n}") for n in names]


def sh(p: Pod, cid: str, script: str) -> tuple[int, str]:
    r = p.exec(cid, ["sh", "-c", script], timeout=10)
    return r.exit_code, (r.stdout + r.stderr).decode()


def test_device_nodes_env_mount_groups_and_hook(env: Env, pod: Pod) -> None:
    names = ["zero", "null", "share", *(["loop"] if LOOP else [])]
    cid = pod.run("cdi", ["sleep", "300"], CDI_devices=devices(*names))

    code, zero = sh(pod, cid, "ls -l /dev/cdi-zero")
    assert code == 0 and zero.startswith("crw-rw-rw-") and "1,   5" in zero, zero  # the host's mode, too
    code, null = sh(pod, cid, "ls -l /dev/cdi-null")
    assert code == 0 and null.startswith("crw--w----") and "1,   3" in null, null  # fileMode of /run-cdi's
    assert sh(pod, cid, "head -c 4 /dev/cdi-zero | od -An -tx1") == (0, " 00 00 00 00\n")
    assert sh(pod, cid, "echo x > /dev/cdi-null && echo ok") == (0, "ok\n")

    code, out = sh(pod, cid, "env")
    assert code == 0
    assert {"CDI_VENDOR=example", "SHARE=yes", "NULL_FROM=run"} <= set(out.splitlines())  # /run-cdi overrides

    code, out = sh(pod, cid, "id -G")
    assert code == 0 and "4321" in out.split(), out

    assert sh(pod, cid, "cat /cdi/share/hello") == (0, "from the host\n")
    code, out = sh(pod, cid, "touch /cdi/share/new")
    assert code != 0 and "Read-only file system" in out

    assert env.hook_out.read_text() == "ran\n"  # the createRuntime hook ran, with its env

    if LOOP:
        code, out = sh(pod, cid, "ls -l /dev/cdi-loop")
        major, minor = os.major(os.stat(LOOP).st_rdev), os.minor(os.stat(LOOP).st_rdev)
        assert code == 0 and out.startswith("b") and f"{major},{minor:>4}" in out, out
        code, out = sh(pod, cid, ": > /dev/cdi-loop")  # "r" only: the device cgroup refuses writes
        assert code != 0 and "not permitted" in out, out


def test_poststart_hook_and_runc_start(env: Env, pod: Pod) -> None:
    """A container with a poststart hook is started by `runc start` (runc >= 1.2 runs the hook
    there); one without is started by crid opening runc's exec fifo (cri/runtime/exec_fifo.py)."""
    hooked = pod.run("hooked", ["sleep", "300"], CDI_devices=devices("poststart"))
    plain = pod.run("plain", ["sleep", "300"])
    assert Path(f"{env.hook_out}.poststart").read_text().strip().isdigit()  # the hook ran
    commands = env.runtime_log.read_text().splitlines()
    assert [c for c in commands if c.endswith(f"start {hooked}")], commands
    assert not [c for c in commands if c.endswith(f"start {plain}")], commands
    for cid in (hooked, plain):
        assert pod.status(cid).state == pb.CONTAINER_RUNNING
        assert sh(pod, cid, "echo ok") == (0, "ok\n")


def test_devices_from_annotations(env: Env, pod: Pod) -> None:
    annotations = {"cdi.k8s.io/e2e-plugin": "example.com/dev=zero"}
    cid = pod.run("annotated", ["sleep", "300"], annotations=annotations)
    code, out = sh(pod, cid, "ls -l /dev/cdi-zero && env")
    assert code == 0 and "CDI_VENDOR=example" in out, out


def test_unknown_device_fails_create(env: Env, pod: Pod) -> None:
    with pytest.raises(grpc.RpcError) as err:
        pod.create("unknown", ["true"], CDI_devices=devices("zero", "gpu7"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "example.com/dev=gpu7" in str(err.value.details()) and "dev=zero" not in str(err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        pod.create("badname", ["true"], annotations={"cdi.k8s.io/x": "gpu7"})
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "'gpu7'" in str(err.value.details())


def test_spec_changes_are_picked_up(env: Env, pod: Pod) -> None:
    path = env.run / "late.json"

    def write(value: str) -> None:
        doc = {
            "cdiVersion": "0.3.0",
            "kind": "example.com/late",
            "devices": [{"name": "x", "containerEdits": {"env": [f"LATE={value}"]}}],
        }
        path.write_text(json.dumps(doc))

    late = [pb.CDIDevice(name="example.com/late=x")]
    try:
        write("one")
        cid = pod.run("late1", ["sleep", "300"], CDI_devices=late)
        assert "LATE=one" in sh(pod, cid, "env")[1]
        time.sleep(0.01)  # edited in place: a new mtime (its size changes too)
        write("twenty-two")
        cid = pod.run("late2", ["sleep", "300"], CDI_devices=late)
        assert "LATE=twenty-two" in sh(pod, cid, "env")[1]
    finally:
        path.unlink()
    with pytest.raises(grpc.RpcError) as err:
        pod.create("late3", ["true"], CDI_devices=late)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_status_lists_devices_and_spec_errors(env: Env) -> None:
    bad = env.etc / "bad.yaml"
    bad.write_text("cdiVersion: 0.3.0\nkind: nokind\ndevices: []\n")
    try:
        info = json.loads(env.d.client.runtime.Status(pb.StatusRequest(verbose=True)).info["cdi"])
    finally:
        bad.unlink()
    assert info["specDirs"] == [str(env.etc), str(env.run)]
    assert "example.com/dev=zero" in info["devices"] and "example.com/dev=null" in info["devices"]
    assert info["errors"] == {str(bad): ["invalid CDI Spec: invalid vendor. empty name"]}
    info = json.loads(env.d.client.runtime.Status(pb.StatusRequest(verbose=True)).info["cdi"])
    assert info["errors"] == {}
