"""CheckpointContainer end to end: a running counter container in a real pod.

Where `criu check` fails (Debian's criu 3.17.1 on Linux 6.18: "vdso: Unexpected
rt vDSO area bounds"), crid answers FAILED_PRECONDITION with criu's reason, the
container keeps counting and nothing is written; where it passes, the archive
is inspected as checkpointctl would. The request's checks answer the same on
either machine."""

import asyncio
import io
import json
import os
import shutil
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from cri.runtime.checkpoint import CriuSupport, probe_criu
from tests.e2e.conftest import Daemons
from tests.e2e.container_pod import Pod, env
from tests.e2e.harness import CridProcess
from tests.support.cni_net import Network

__all__ = ["env"]  # the module fixture: one registry, one daemon with a network, busybox pulled

Env = tuple[CridProcess, str, Network]
# /data/count is new in the layer, /root (the image's) is deleted: a whiteout
COUNTER = [
    "sh",
    "-c",
    "mkdir -p /data; rm -rf /root; i=0; while true; do i=$((i+1)); echo $i >/data/count; sleep 0.1; done",
]


@pytest.fixture(scope="module")
def criu(env: Env) -> CriuSupport:
    """What crid's startup probe found (Status verbose), checked against a probe of our own."""
    d, _, _ = env
    info = d.client.runtime.Status(pb.StatusRequest(verbose=True)).info
    found = json.loads(info["checkpoint"])
    ours = asyncio.run(probe_criu())
    assert found == ours.describe(), "crid's criu probe disagrees with `criu check` run here"
    return ours


@pytest.fixture(scope="module")
def counter(env: Env) -> Iterator[tuple[Pod, str]]:
    d, image, _ = env
    p = Pod(d, image, "checkpoint")
    cid = p.run("counter", COUNTER)
    _wait_count(p, cid, 2)
    yield p, cid
    p.remove()


def _count(p: Pod, cid: str) -> int:
    out = p.exec(cid, ["cat", "/data/count"]).stdout.decode().strip()
    return int(out or 0)


def _wait_count(p: Pod, cid: str, above: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = _count(p, cid)
        if n > above:
            return n
        time.sleep(0.05)
    raise AssertionError(f"the counter did not pass {above}")


def _checkpoint(d: CridProcess, cid: str, location: str, timeout: int = 0) -> None:
    req = pb.CheckpointContainerRequest(container_id=cid, location=location, timeout=timeout)
    d.client.runtime.CheckpointContainer(req, timeout=120)


def _error(d: CridProcess, cid: str, location: str, timeout: int = 0) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        _checkpoint(d, cid, location, timeout)
    return err.value


def test_status_verbose_says_whether_checkpointing_works(criu: CriuSupport) -> None:
    if not criu.supported:
        assert criu.reason.startswith(("criu check failed: ", "criu is not installed"))


def test_where_criu_check_fails_the_answer_is_criu_s_reason(
    env: Env, counter: tuple[Pod, str], criu: CriuSupport, tmp_path: Path
) -> None:
    if criu.supported:
        pytest.skip("criu check passes on this machine: the real checkpoint is tested instead")
    d, _, _ = env
    p, cid = counter
    location = tmp_path / "ckpt.tar"
    err = _error(d, cid, str(location))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == f"checkpointing container {cid} is not supported on this node: {criu.reason}"
    assert os.listdir(tmp_path) == []  # nothing at the location, no partial file next to it
    before = _count(p, cid)
    assert p.status(cid).state == pb.CONTAINER_RUNNING and _wait_count(p, cid, before) > before


@pytest.mark.parametrize(
    ("location", "timeout", "code", "words"),
    [
        ("", 0, grpc.StatusCode.INVALID_ARGUMENT, "location is empty"),
        ("ckpt.tar", 0, grpc.StatusCode.INVALID_ARGUMENT, "'ckpt.tar' is not an absolute path"),
        ("/tmp", 0, grpc.StatusCode.INVALID_ARGUMENT, "'/tmp' is a directory"),
        ("/nonexistent-crid-dir/ckpt.tar", 0, grpc.StatusCode.FAILED_PRECONDITION, "does not exist"),
        ("/tmp/ckpt.tar", -5, grpc.StatusCode.INVALID_ARGUMENT, "timeout -5 is negative"),
    ],
)
def test_request_checks(env: Env, counter: tuple[Pod, str], location: str, timeout: int, code: grpc.StatusCode,
                        words: str) -> None:  # fmt: skip
    d, _, _ = env
    err = _error(d, counter[1], location, timeout)
    assert (err.code(), words in err.details()) == (code, True), err.details()


def test_unknown_empty_and_exited_containers(env: Env, counter: tuple[Pod, str], tmp_path: Path) -> None:
    d, _, _ = env
    p, _ = counter
    location = str(tmp_path / "ckpt.tar")
    assert _error(d, "f" * 64, location).code() == grpc.StatusCode.NOT_FOUND
    err = _error(d, "", location)
    assert (err.code(), err.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "CheckpointContainer: container_id is empty",
    )
    done = p.run("done", ["true"])
    p.wait(done)
    err = _error(d, done, location)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "is exited, not running" in err.details()
    assert os.listdir(tmp_path) == []


def test_runc_checkpoint_runs_and_its_failure_resumes_the_container(
    env: Env, daemons: Daemons, criu: CriuSupport, tmp_path: Path
) -> None:
    """With a stand-in criu that passes `criu check` (and hands runc's calls to the
    real one), crid goes all the way: pause, `runc checkpoint`, resume. The real
    criu then fails the dump as its own check said it would."""
    real = shutil.which("criu")
    if real is None or criu.supported:
        pytest.skip("needs an installed criu whose check fails (where it passes, the real checkpoint is tested)")
    stand_in = tmp_path / "bin"
    stand_in.mkdir()
    (stand_in / "criu").write_text(
        f'#!/bin/sh\n[ "$1" = check ] && {{ echo "Looks good."; exit 0; }}\nexec {real} "$@"\n'
    )
    (stand_in / "criu").chmod(0o755)
    d = daemons.new("standin", env={"PATH": f"{stand_in}:{os.environ['PATH']}"}).start()
    _, image, _ = env
    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image)), timeout=60)
    host = pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=pb.NODE))
    p = Pod(d, image, "standin", security_context=host)
    try:
        assert json.loads(d.client.runtime.Status(pb.StatusRequest(verbose=True)).info["checkpoint"])["supported"]
        cid = p.run("counter", COUNTER)
        _wait_count(p, cid, 2)
        location = tmp_path / "out" / "ckpt.tar"
        location.parent.mkdir()
        err = _error(d, cid, str(location))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.details().startswith(f"checkpoint of container {cid} failed: runc checkpoint: criu failed")
        assert "; Error (criu/" in err.details() and "log file:" not in err.details()  # CRIU's cause, from dump.log
        assert os.listdir(location.parent) == []
        assert not [n for n in os.listdir(Path(d.root, "containers", cid)) if n.startswith("checkpoint-")]
        before = _count(p, cid)
        assert p.status(cid).state == pb.CONTAINER_RUNNING and _wait_count(p, cid, before) > before  # resumed
    finally:
        p.remove()


def _member(data: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        f = tar.extractfile(name)
        assert f is not None, name
        return f.read()


def test_checkpoint_of_a_running_counter(env: Env, counter: tuple[Pod, str], criu: CriuSupport, tmp_path: Path) -> None:
    if not criu.supported:
        pytest.skip(f"CRIU cannot checkpoint on this machine: {criu.reason}")
    d, _, _ = env
    p, cid = counter
    location = tmp_path / "ckpt.tar"
    _checkpoint(d, cid, str(location))
    assert os.listdir(tmp_path) == ["ckpt.tar"] and (location.stat().st_mode & 0o777) == 0o600
    data = location.read_bytes()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert {"config.dump", "spec.dump", "checkpoint", "rootfs-diff.tar", "dump.log", "container.log"} <= set(names)
    assert "checkpoint/inventory.img" in names and any(n.startswith("checkpoint/pages-") for n in names)
    config = json.loads(_member(data, "config.dump"))
    assert config["id"] == cid and config["runtime"] == "runc" and config["rootfsImage"] == p.image
    spec = json.loads(_member(data, "spec.dump"))
    assert spec["annotations"]["io.kubernetes.cri.container-name"] == "counter"
    with tarfile.open(fileobj=io.BytesIO(_member(data, "rootfs-diff.tar"))) as diff:
        layer = diff.getnames()
        count = diff.extractfile("data/count")
        assert count is not None and int(count.read()) > 0
    assert "etc/hosts" not in layer and not any(n == "proc" or n.startswith("proc/") for n in layer)
    assert json.loads(_member(data, "deleted.files")) == ["/root"]
    before = _count(p, cid)
    assert p.status(cid).state == pb.CONTAINER_RUNNING and _wait_count(p, cid, before) > before
