"""Exec round trips: what exec probes (ExecSync) and ``kubectl exec`` (Exec
over the streaming server, SPDY as kubelet and crictl speak it) cost.

Both run ``true`` in one running busybox container; the streaming sample is
the whole round trip a client sees: the Exec RPC, the HTTP upgrade, the
streams, and the exit status on the error stream. Their floor: ``runc exec``
of ``true`` into a running busybox container, with no CRI daemon, from the
binary as installed and from the sealed copy crid runs it from.
"""

import asyncio
import json
import os
import time
import uuid
from collections.abc import Callable

from benchmarks import oci
from benchmarks.core import CriTarget, NotSupported, OciTarget, Params, cri_workload, oci_workload
from benchmarks.cri_calls import CONTAINER_RPCS, create_container, ensure_busybox, pod, start_container
from benchmarks.workloads import WARMUP
from cri.api.v1 import api_pb2 as pb
from cri.runtime import sealed_binary
from cri.streaming import spdy_client

EXEC_TIMEOUT = 30.0


def _exec_sync(t: CriTarget, cid: str) -> None:
    resp = t.client.runtime.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["true"]), timeout=EXEC_TIMEOUT)
    if resp.exit_code != 0:
        raise RuntimeError(f"{t.name}: ExecSync true exited {resp.exit_code}: {resp.stderr!r}")


async def _exec_stream(t: CriTarget, cid: str) -> None:
    req = pb.ExecRequest(container_id=cid, cmd=["true"], stdout=True, stderr=True)
    url = str(t.client.runtime.Exec(req, timeout=EXEC_TIMEOUT).url)
    conn = await spdy_client.connect(url)
    try:
        streams = await spdy_client.exec_streams(conn.session)
        outputs = [b"".join([c async for c in streams[k]]) for k in ("stdout", "stderr", "error")]
    finally:
        await conn.close()
    status = json.loads(outputs[2])
    if status.get("status") != "Success":
        raise RuntimeError(f"{t.name}: streaming exec of true failed: {status}")


def _in_container(t: CriTarget, p: Params, call: Callable[[CriTarget, str], None]) -> list[float]:
    busybox = ensure_busybox(t, p)
    samples = []
    with pod(t, p) as (pod_id, pod_cfg):
        cid = create_container(t, pod_id, pod_cfg, busybox, "exec")
        start_container(t, cid)
        for i in range(WARMUP + p.count):
            t0 = time.perf_counter()
            call(t, cid)
            if i >= WARMUP:
                samples.append(time.perf_counter() - t0)
    return samples


@cri_workload("exec_sync", "ExecSync of true", count=50, runs=3, rpcs=(*CONTAINER_RPCS, "ExecSync"), needs_images=True)
def exec_sync(t: CriTarget, p: Params) -> list[float]:
    """ExecSync ``true`` in a running container: the cost of an exec liveness probe."""
    return _in_container(t, p, _exec_sync)


@cri_workload("exec_stream", "Exec (SPDY) of true", count=50, runs=3, rpcs=(*CONTAINER_RPCS, "Exec"), needs_images=True)
def exec_stream(t: CriTarget, p: Params) -> list[float]:
    """Exec ``true`` through the streaming server over SPDY, as ``kubectl exec`` through kubelet."""
    return _in_container(t, p, lambda t, cid: asyncio.run(_exec_stream(t, cid)))


@oci_workload("floor_exec", "floor: `{target} exec` of true in a running busybox container", count=50, runs=3)
def floor_exec(t: OciTarget, p: Params) -> list[float]:
    """What an exec probe costs the OCI runtime itself: one ``exec`` command, no daemon, no monitor."""
    return _floor_exec(t, p, t.binary, "floor-exec")


@oci_workload(
    "floor_exec_sealed", "floor: `{target} exec` of true, from a sealed memfd copy as crid runs it", count=50, runs=3
)
def floor_exec_sealed(t: OciTarget, p: Params) -> list[float]:
    """The same from the sealed copy of the binary crid runs (cri/runtime/sealed_binary.py): the
    runtime then skips its own bind mount of itself. What crid's ExecSync is measured against."""
    return _floor_exec(t, p, sealed_binary.executable(t.binary), "floor-exec-sealed")


def _floor_exec(t: OciTarget, p: Params, binary: str, name: str) -> list[float]:
    bundle = oci.make_bundle(p.workdir / "sleeper", ("/bin/busybox", "sleep", "3600"))
    try:
        return oci.exec_samples(binary, t.root, bundle, f"{name}-{p.round}-{uuid.uuid4().hex[:8]}", p.count)
    except RuntimeError as exc:
        if p.round == 0:  # it never ran here: crun 1.8 on hybrid cgroups
            # the sealed copy's name is a number (/proc/<pid>/fd/<n>): the message says the runtime's
            raise NotSupported(str(exc).replace(os.path.basename(binary), t.name, 1)) from exc
        raise
