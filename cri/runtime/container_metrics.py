"""Container exit metrics, counted where crid records an exit."""

from prometheus_client import Counter

from cri.metrics import REGISTRY

EXITS = Counter(
    "crid_container_exits",
    "Container exits by reason as the CRI reports it: Completed, Error, OOMKilled",
    ["reason"],
    registry=REGISTRY,
)
OOM_KILLS = Counter("crid_container_oom_kills", "Container exits the kernel's OOM killer caused", registry=REGISTRY)
# resolved once, and present at zero from the start (alerts compare increases)
_BY_REASON = {r: EXITS.labels(r) for r in ("Completed", "Error", "OOMKilled")}


def count_exit(reason: str) -> None:
    child = _BY_REASON.get(reason)
    (child if child is not None else EXITS.labels(reason)).inc()
    if reason == "OOMKilled":
        OOM_KILLS.inc()
