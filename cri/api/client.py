"""A small synchronous CRI client: what the e2e tests and the benchmarks use
to drive crid (or containerd) exactly as kubelet would, over gRPC."""

from types import TracebackType

import grpc

from cri.api.v1 import api_pb2_grpc


def channel_target(endpoint: str) -> str:
    """``unix:///run/crid/crid.sock``, ``/run/crid/crid.sock`` -> gRPC target."""
    return endpoint if "://" in endpoint else f"unix://{endpoint}"


class CriClient:
    def __init__(self, endpoint: str, max_message_mib: int = 16) -> None:
        limit = max_message_mib * 1024 * 1024
        self.channel = grpc.insecure_channel(
            channel_target(endpoint),
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
        )
        self.runtime = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.image = api_pb2_grpc.ImageServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "CriClient":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
