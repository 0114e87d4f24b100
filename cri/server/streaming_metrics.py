"""The streaming server's metrics, registered at the daemon's start (the sessions' code is not)."""

from prometheus_client import Counter, Gauge

from cri.metrics import REGISTRY

SESSIONS = Gauge("crid_streaming_sessions_active", "Streaming sessions in progress", ["kind"], registry=REGISTRY)
SESSIONS_TOTAL = Counter(
    "crid_streaming_sessions", "Streaming sessions by outcome", ["kind", "transport", "outcome"], registry=REGISTRY
)
BYTES = Counter(
    "crid_streaming_bytes", "Bytes through streaming sessions (in: from the client)", ["kind", "direction"],
    registry=REGISTRY,
)  # fmt: skip
KINDS = ("exec", "attach", "portforward")
for _kind in KINDS:  # present at zero from the start
    SESSIONS.labels(_kind)
