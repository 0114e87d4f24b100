"""crid's Prometheus registry.

One registry per daemon process, holding the process collector and every
metric crid defines; each layer declares its own metrics against REGISTRY
next to the code that updates them. cri.server.metrics serves it over HTTP.
"""

from prometheus_client import CollectorRegistry, Info, PlatformCollector, ProcessCollector

import cri

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)

BUILD_INFO = Info("crid_build", "crid build information", registry=REGISTRY)
BUILD_INFO.info({"version": cri.__version__, "runtime_api_version": "v1"})
