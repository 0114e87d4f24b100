"""runtime.v1.ImageService. Every RPC answers UNIMPLEMENTED until the image
store lands (the generated base class raises NotImplementedError)."""

from cri.api.v1 import api_pb2_grpc
from cri.config import Config


class ImageServicer(api_pb2_grpc.ImageServiceServicer):
    def __init__(self, config: Config) -> None:
        self.config = config
