"""Image pull metrics, and each pull's progress (the watchdog's and the gauges').

The per-pull gauges come from a collector that reads the pulls in flight at
scrape time: a series exists exactly while its pull runs, with no
bookkeeping to forget when a pull ends.
"""

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cri.metrics import REGISTRY

PULLS = Counter(
    "crid_image_pulls", "Image pulls by outcome (success, error, cancelled)", ["outcome"], registry=REGISTRY
)
PULL_SECONDS = Histogram(
    "crid_image_pull_duration_seconds",
    "Duration of successful image pulls",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
PULLS_IN_FLIGHT = Gauge("crid_image_pulls_in_flight", "Image pulls in progress", registry=REGISTRY)
DOWNLOADED_BYTES = Counter(
    "crid_image_pull_downloaded_bytes",
    "Bytes downloaded from registries (manifests, configs, layers)",
    registry=REGISTRY,
)
SKIPPED_BYTES = Counter(
    "crid_image_pull_skipped_bytes",
    "Bytes of configs and layers a pull did not download: already in the content store or unpacked",
    registry=REGISTRY,
)
LAYERS = Counter(
    "crid_image_pull_layers",
    "Layers pulls needed, by source: registry (downloaded), content_store (blob present, unpacked now), "
    "snapshot (already unpacked: reused as is)",
    ["source"],
    registry=REGISTRY,
)

# present at zero from the start: increase() and alerts see the first pull too
for _outcome in ("success", "error", "cancelled"):
    PULLS.labels(_outcome)
for _source in ("registry", "content_store", "snapshot"):
    LAYERS.labels(_source)


@dataclass(eq=False)
class Progress:
    """One pull: when it last moved forward (the watchdog cancels it when
    stuck) and how many of its bytes it has (the progress gauges)."""

    image: str = ""
    last: float = field(default_factory=time.monotonic)
    busy: int = 0  # work without byte progress (an unpack) in flight
    done: int = 0  # bytes of the config and layers present or downloaded so far
    size: int = 0  # bytes of the config and layers; 0 until the manifest is read
    _partial: dict[str, int] = field(default_factory=dict)  # bytes seen of blobs in download

    def tick(self, n: int = 0) -> None:
        self.last = time.monotonic()
        self.done += n

    def got(self, digest: str, n: int) -> None:
        self._partial[digest] = self._partial.get(digest, 0) + n
        self.tick(n)

    def have(self, digest: str, size: int) -> None:
        """The blob is stored; what this pull did not see of it (it joined a
        download under way, or another pull finished it first) counts now."""
        self.done += max(0, size - self._partial.pop(digest, 0))


# the pulls in flight; Images.pull adds and removes its own
ACTIVE: set[Progress] = set()


class _PullProgress(Collector):
    """``crid_image_pull_{progress,size}_bytes{image}`` of the pulls in flight.
    Concurrent pulls of one image share its series (with the most progress)."""

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "crid_image_pull_progress_bytes",
                "Bytes of the image's config and layers present or downloaded so far, per pull in flight",
                labels=["image"],
            ),
            GaugeMetricFamily(
                "crid_image_pull_size_bytes",
                "Bytes of the image's config and layers (0 until its manifest is read), per pull in flight",
                labels=["image"],
            ),
        )

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        done, size = self._families()
        best: dict[str, tuple[int, int]] = {}
        # scrapes run in the HTTP server's thread: list() copies the set in one step under the GIL
        for p in list(ACTIVE):
            d = min(p.done, p.size) if p.size else p.done  # a retried download may report bytes twice
            best[p.image] = max(best.get(p.image, (0, 0)), (d, p.size))
        for image, (d, s) in sorted(best.items()):
            done.add_metric([image], d)
            size.add_metric([image], s)
        yield done
        yield size


PULL_PROGRESS = _PullProgress()
REGISTRY.register(PULL_PROGRESS)
