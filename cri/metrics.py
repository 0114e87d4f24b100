"""crid's Prometheus registry.

One registry per daemon process, holding the process collector and every
metric crid defines; each layer declares its own metrics against REGISTRY
next to the code that updates them. cri.server.metrics serves it over HTTP.
docs/METRICS.md lists them all (a unit test keeps the two in step).
"""

from prometheus_client import CollectorRegistry, Info, PlatformCollector, ProcessCollector, disable_created_metrics

import cri

# no *_created series: one more series per counter and histogram child that no dashboard or alert reads
disable_created_metrics()  # type: ignore[no-untyped-call]  # the library leaves it unannotated

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Info("crid_build", "crid build information", registry=REGISTRY)
BUILD_INFO.info({"version": cri.__version__, "runtime_api_version": "v1"})
