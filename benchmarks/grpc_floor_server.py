"""The bare grpc.aio server of benchmarks/grpc_floor.py, in a module of its own so that its
process loads what a Python CRI server cannot do without and nothing else: asyncio, grpc and
the CRI's generated messages (no benchmark code, no crid code). It answers Version with bytes
serialized once, and ListContainers and ListPodSandbox with the bytes of LIST_REPLY_FILE (a reply a
runtime gave to the call the client makes).

With ``--libraries`` it also imports the libraries crid's daemon is built on and imports at its
start (msgspec for its configuration, prometheus_client for its metrics, sqlite3 for its
image metadata; h11 and wsproto wait for the first pull or streaming connection), and does
nothing with them: the idle RSS floor of a daemon made of these parts, before any code of its own.

``python -m benchmarks.grpc_floor_server SOCKET [LIST_REPLY_FILE [--libraries]]`` serves until SIGTERM.
"""

import asyncio
import importlib
import sys
from pathlib import Path

import grpc

from cri.api.v1 import api_pb2 as pb

VERSION_REPLY = pb.VersionResponse(
    version="0.1.0", runtime_name="grpc-floor", runtime_version="0", runtime_api_version="v1"
).SerializeToString()


async def serve(socket: str, list_reply: bytes = b"") -> None:
    async def version(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return VERSION_REPLY

    async def answer_list(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return list_reply

    server = grpc.aio.server()
    methods = {  # no (de)serializers: bytes in, bytes out
        "Version": grpc.unary_unary_rpc_method_handler(version),
        "ListContainers": grpc.unary_unary_rpc_method_handler(answer_list),
        "ListPodSandbox": grpc.unary_unary_rpc_method_handler(answer_list),  # then the reply file is a pod list
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", methods),))
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    await server.wait_for_termination()


LIBRARIES = ("msgspec", "prometheus_client", "sqlite3")


if __name__ == "__main__":
    if "--libraries" in sys.argv[3:]:
        for name in LIBRARIES:
            importlib.import_module(name)
    asyncio.run(serve(sys.argv[1], Path(sys.argv[2]).read_bytes() if len(sys.argv) > 2 else b""))
