"""The floor of a CRI round trip in Python: a bare grpc.aio server answering
Version with bytes serialized once, no wrapper, no logging, no metrics, no
crid code. Its row puts that server in crid's column and containerd in its
own, so the ratio says how much of crid's round trip is grpc.aio itself.
The same server answers ListContainers with the bytes of a reply crid gave
(100 containers): the floor of the 100-container list.

``python -m benchmarks.grpc_floor SOCKET [LIST_REPLY_FILE]`` serves until SIGTERM.
"""

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import grpc

from benchmarks.core import CriTarget, Params, cri_workload
from benchmarks.workloads import LIST_100_RPCS, hundred_containers, list_containers_100, timed
from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb

START_TIMEOUT = 20.0
REPLY = pb.VersionResponse(
    version="0.1.0", runtime_name="grpc-floor", runtime_version="0", runtime_api_version="v1"
).SerializeToString()


async def _version(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return REPLY


async def serve(socket: str, list_reply: bytes = b"") -> None:
    async def list_containers(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return list_reply

    server = grpc.aio.server()
    methods = {  # no (de)serializers: bytes in, bytes out
        "Version": grpc.unary_unary_rpc_method_handler(_version),
        "ListContainers": grpc.unary_unary_rpc_method_handler(list_containers),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", methods),))
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    await server.wait_for_termination()


def _floor_samples(workdir: Path, count: int, list_reply: bytes = b"") -> list[float]:
    """Version (or, given ``list_reply``, ListContainers) against the bare server, ``count`` times."""
    socket = str(workdir / "floor.sock")
    Path(socket).unlink(missing_ok=True)  # an earlier round's
    reply_file = workdir / "floor-list-reply.bin"
    reply_file.write_bytes(list_reply)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.grpc_floor", socket, str(reply_file)], stdin=subprocess.DEVNULL
    )
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
            if list_reply:
                listing = pb.ListContainersRequest()
                return timed(lambda: client.runtime.ListContainers(listing), count)
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


@cri_workload(
    "list_containers_100_floor",
    "ListContainers, 100 containers: the bare grpc.aio server with crid's reply in crid's column (the floor)",
    count=200,
    runs=2,
    rpcs=LIST_100_RPCS,
    needs_images=True,
)
def list_containers_100_floor(t: CriTarget, p: Params) -> list[float]:
    if t.name != "crid":
        return list_containers_100(t, p)
    with hundred_containers(t, p):  # crid's own reply, serialized as it sends it
        reply = t.client.runtime.ListContainers(pb.ListContainersRequest(), timeout=60).SerializeToString()
    return _floor_samples(p.workdir, p.count, reply)


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1], Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2 else b""))
