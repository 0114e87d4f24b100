"""The floor of a CRI round trip in Python: a bare grpc.aio server answering
Version with bytes serialized once, no wrapper, no logging, no metrics, no
crid code. Its row puts that server in crid's column and containerd in its
own, so the ratio says how much of crid's round trip is grpc.aio itself.

``python -m benchmarks.grpc_floor SOCKET`` serves until SIGTERM.
"""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc

from benchmarks.core import CriTarget, Params, cri_workload
from benchmarks.workloads import timed
from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb

START_TIMEOUT = 20.0
REPLY = pb.VersionResponse(
    version="0.1.0", runtime_name="grpc-floor", runtime_version="0", runtime_api_version="v1"
).SerializeToString()


async def _version(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return REPLY


async def serve(socket: str) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_version)  # no (de)serializers: bytes in, bytes out
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", {"Version": handler}),)
    )
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    await server.wait_for_termination()


def _floor_samples(workdir: Path, count: int) -> list[float]:
    socket = str(workdir / "floor.sock")
    Path(socket).unlink(missing_ok=True)  # an earlier round's
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.grpc_floor", socket], stdin=subprocess.DEVNULL)
    try:
        with CriClient(socket) as client:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    client.runtime.Version(pb.VersionRequest(), timeout=1, wait_for_ready=True)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
            req = pb.VersionRequest(version="0.1.0")
            return timed(lambda: client.runtime.Version(req), count)
    finally:
        proc.terminate()
        proc.wait()


@cri_workload("version_floor", "Version round trip: a bare grpc.aio server in crid's column (the floor)", count=2000)
def version_floor(t: CriTarget, p: Params) -> list[float]:
    if t.name != "crid":
        req = pb.VersionRequest(version="0.1.0")
        return timed(lambda: t.client.runtime.Version(req), p.count)
    return _floor_samples(p.workdir, p.count)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1]))
