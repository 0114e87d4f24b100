"""gRPC request metrics and the /metrics HTTP endpoint."""

import logging
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from cri.config import parse_address
from cri.metrics import REGISTRY

log = logging.getLogger(__name__)

GRPC_REQUESTS = Counter(
    "crid_grpc_requests",
    "CRI gRPC requests handled, by service, method and status code",
    ["service", "method", "code"],
    registry=REGISTRY,
)
GRPC_DURATION = Histogram(
    "crid_grpc_request_duration_seconds",
    "Time spent handling a CRI gRPC request",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
    registry=REGISTRY,
)
GRPC_IN_FLIGHT = Gauge(
    "crid_grpc_requests_in_flight",
    "CRI gRPC requests being handled now",
    ["method"],
    registry=REGISTRY,
)


class MetricsServer:
    """prometheus-client's HTTP server, in its own thread (off the event loop)."""

    def __init__(self, address: str) -> None:
        self._host, self._port = parse_address(address)
        self._server: Any = None
        self._thread: Any = None
        self.address = address

    def start(self) -> str:
        """Bind and serve; returns the bound HOST:PORT (resolves port 0)."""
        self._server, self._thread = start_http_server(self._port, addr=self._host, registry=REGISTRY)
        host, port = self._server.server_address[:2]
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
