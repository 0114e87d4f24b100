"""CRI operation metrics and the /metrics HTTP endpoint."""

import logging
from typing import Any

import grpc
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from cri.config import parse_address
from cri.metrics import REGISTRY

log = logging.getLogger(__name__)

# 1 ms (Version, List*) to 10 min (a big PullImage)
OPERATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

OPERATIONS = Counter(
    "crid_operations",
    "CRI operations handled, by operation (the RPC method) and gRPC status code",
    ["operation", "code"],
    registry=REGISTRY,
)
OPERATION_SECONDS = Histogram(
    "crid_operation_duration_seconds",
    "Time spent handling a CRI operation, by operation",
    ["operation"],
    buckets=OPERATION_BUCKETS,
    registry=REGISTRY,
)
MALFORMED = Counter(
    "crid_malformed_requests",
    "Requests refused as INVALID_ARGUMENT because their body is not the operation's message",
    ["operation"],
    registry=REGISTRY,
)
OPERATIONS_IN_FLIGHT = Gauge(
    "crid_operations_in_flight",
    "CRI operations being handled now, by operation",
    ["operation"],
    registry=REGISTRY,
)


class OperationMetrics:
    """The labelled children of one operation, resolved once: label lookups
    take a lock and hash the labels, too much for every call."""

    def __init__(self, operation: str) -> None:
        self.operation = operation
        self.in_flight = OPERATIONS_IN_FLIGHT.labels(operation)
        self.seconds = OPERATION_SECONDS.labels(operation)
        self.malformed = MALFORMED.labels(operation)
        # OK exists from the start, so rate() and ratios see a zero, not a missing series
        self._counts = {grpc.StatusCode.OK: OPERATIONS.labels(operation, grpc.StatusCode.OK.name)}

    def finished(self, code: grpc.StatusCode, seconds: float) -> None:
        counter = self._counts.get(code)
        if counter is None:
            counter = self._counts[code] = OPERATIONS.labels(self.operation, code.name)
        counter.inc()
        self.seconds.observe(seconds)
        self.in_flight.dec()


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
