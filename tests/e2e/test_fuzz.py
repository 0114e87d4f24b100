"""Thousands of malformed requests against a real crid, over every RPC.

The requests (tests/support/fuzz.py, seeded) are random bytes and
well-formed messages with hostile values. Whatever crid answers must be a
deliberate answer: never INTERNAL or UNKNOWN, never RESOURCE_EXHAUSTED
because an error text quoted a huge input back, a short message; the daemon
stays up, and nothing the refused requests named is left behind. Pulls can
only reach a dead loopback port: ``_default/hosts.toml`` sends every
registry there, so no request ever leaves the machine.
"""

import collections
import random
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess
from tests.support import fuzz
from tests.support.stream_clients import closed_port

SEED = 20261201
PER_RPC = 35  # of each kind: 2 kinds x 45 RPCs x 35 = 3,150 requests
MESSAGE_LIMIT = 1024  # the longest error text a client should ever get
ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.UNAVAILABLE,  # a pull to the dead registry
    grpc.StatusCode.DEADLINE_EXCEEDED,  # a stream that does not end by itself (GetContainerEvents)
    grpc.StatusCode.UNIMPLEMENTED,  # CheckpointPod, RestorePod
    grpc.StatusCode.PERMISSION_DENIED,
}


@pytest.fixture(scope="module")
def crid(e2e_base: Path) -> Iterator[CridProcess]:
    d = CridProcess(e2e_base / "fuzz", settings={"log": {"level": "info"}})
    hosts = Path(d.config.images.registry_config_dir) / "_default"
    hosts.mkdir(parents=True)
    (hosts / "hosts.toml").write_text(f'server = "http://127.0.0.1:{closed_port()}"\n')
    d.start()
    yield d
    d.stop()


def _call(channel: grpc.Channel, rpc: fuzz.Rpc, body: bytes) -> tuple[grpc.StatusCode, str]:
    ident = lambda b: b  # noqa: E731  (bodies go on the wire as they are)
    try:
        if rpc.streaming:
            stream = channel.unary_stream(rpc.path, request_serializer=ident, response_deserializer=ident)
            for _ in stream(body, timeout=0.5):
                pass
        else:
            channel.unary_unary(rpc.path, request_serializer=ident, response_deserializer=ident)(body, timeout=10)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


def _cleanup(d: CridProcess) -> list[str]:
    """Remove whatever the accepted requests made; returns what there was."""
    made = []
    rt = d.client.runtime
    for c in rt.ListContainers(pb.ListContainersRequest()).containers:
        made.append(f"container {c.id[:12]}")
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c.id))
    for p in rt.ListPodSandbox(pb.ListPodSandboxRequest()).items:
        made.append(f"pod {p.id[:12]} {p.metadata.name[:40]!r}")
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id))
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))
    for i in d.client.image.ListImages(pb.ListImagesRequest()).images:
        made.append(f"image {i.id}")
    return made


def test_malformed_requests_get_deliberate_answers(crid: CridProcess) -> None:
    channel = crid.client.channel
    problems: list[str] = []
    codes: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    n = 0
    for rpc, body, what in fuzz.requests(SEED, PER_RPC):
        n += 1
        code, message = _call(channel, rpc, body)
        codes[code.name] += 1
        if code not in ALLOWED:
            problems.append(f"{rpc.name} ({what}): {code.name}: {message[:200]}")
        elif len(message) > MESSAGE_LIMIT:
            problems.append(f"{rpc.name} ({what}): a {len(message)}-character message: {message[:100]}...")
    seconds = time.monotonic() - started
    print(f"{n} requests in {seconds:.1f}s: {dict(codes)}")
    assert crid.proc is not None and crid.proc.poll() is None, "crid died"
    assert crid.client.runtime.Version(pb.VersionRequest()).runtime_name == "crid"
    made = _cleanup(crid)
    print(f"accepted requests made: {made}")
    assert not problems, f"{len(problems)} of {n} requests got no deliberate answer:\n" + "\n".join(
        sorted(set(problems))[:40]
    )
    assert not [m for m in made if m.startswith("image")], made  # nothing can be pulled from a dead registry
    log = crid.log_text()
    assert "Traceback" not in log, log[-3000:]


def test_seed_is_deterministic() -> None:
    a = [(r.name, b) for r, b, _ in fuzz.requests(7, 2)]
    b = [(r.name, b) for r, b, _ in fuzz.requests(7, 2)]
    assert a == b and len({x for _, x in a}) > len(a) // 2
    assert random.Random(1).random() == random.Random(1).random()


def test_the_three_rough_spots(crid: CridProcess) -> None:
    """What a hostile client found first: a body that is no protobuf (was UNKNOWN with a traceback),
    a 70,000-character id (its echo made RESOURCE_EXHAUSTED), a NUL in a hostname (was INTERNAL)."""
    rpc = next(r for r in fuzz.rpcs() if r.name == "ContainerStatus")
    code, message = _call(crid.client.channel, rpc, b"\x0a\xff\xff\xff\x0fjunk")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid runtime.v1.ContainerStatusRequest" in message
    with pytest.raises(grpc.RpcError) as err:
        crid.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="x" * 70_000))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and len(err.value.details()) < 400
    meta = pb.PodSandboxMetadata(name="p", namespace="n", uid="u")
    config = pb.PodSandboxConfig(metadata=meta, hostname="web\x00evil")
    with pytest.raises(grpc.RpcError) as err:
        crid.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "config.hostname" in err.value.details()
    assert "Traceback" not in crid.log_text()
