"""Metrics read from crid's state at scrape time: containers and pods by
state, and the readiness conditions that Status reports. Counting at scrape
time keeps no counts in step with the stores, so none can drift."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cri.config import Config
from cri.metrics import REGISTRY
from cri.runtime import handlers
from cri.runtime.container_store import State as ContainerState
from cri.runtime.containers import Containers
from cri.runtime.pods import Pods
from cri.runtime.sandbox_store import State as PodState
from cri.server.rpc import Gate


@dataclass(frozen=True)
class _Daemon:
    config: Config
    gate: Gate
    pods: Pods
    containers: Containers


def _count(states: Iterable[str], values: Iterable[object]) -> dict[str, int]:
    counts = dict.fromkeys(states, 0)
    for state in values:
        counts[str(state)] = counts.get(str(state), 0) + 1
    return counts


class StateCollector(Collector):
    """Scraped in the HTTP server's thread while the event loop changes the
    stores: list() copies a dict's values in one step under the GIL, and the
    condition checks are the thread-safe ones Status runs."""

    def __init__(self) -> None:
        self._daemon: _Daemon | None = None

    def attach(self, config: Config, gate: Gate, pods: Pods, containers: Containers) -> None:
        self._daemon = _Daemon(config, gate, pods, containers)

    def detach(self) -> None:
        self._daemon = None

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("crid_containers", "Containers by state", labels=["state"]),
            GaugeMetricFamily("crid_pods", "Pod sandboxes by state", labels=["state"]),
            GaugeMetricFamily(
                "crid_runtime_condition",
                "Status conditions (RuntimeReady, NetworkReady): 1 when true; "
                "RuntimeReady is 0 until startup recovery has finished",
                labels=["condition"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        containers, pods, conditions = self._families()
        d = self._daemon
        if d is not None:
            c_states = [c.state.value for c in d.containers.records()]
            p_states = [p.state.value for p in d.pods.records()]
            for state, n in _count((s.value for s in ContainerState), c_states).items():
                containers.add_metric([state], n)
            for state, n in _count((s.value for s in PodState), p_states).items():
                pods.add_metric([state], n)
            runtime_ready = d.gate.open and handlers.runtime_condition(d.config).ready
            conditions.add_metric(["RuntimeReady"], int(runtime_ready))
            conditions.add_metric(["NetworkReady"], int(d.pods.network_status().ready))
        yield containers
        yield pods
        yield conditions


STATE = StateCollector()
REGISTRY.register(STATE)
