"""Runtime handlers (RuntimeClass handler -> OCI runtime binary) and whether
the runtime side of crid can work at all."""

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from cri.conditions import Condition
from cri.config import Config
from cri.errors import NotFound
from cri.host import HOST
from cri.runtime import userns_probe
from cri.runtime.checkpoint import UNPROBED, CriuProbe, CriuSupport, probe_criu
from cri.runtime.oci import OciRuntime, Runtime

# (handler name, binary, --root) -> its runtime; tests pass a fake
RuntimeFactory = Callable[[str, str, str], Runtime]


@dataclass(frozen=True)
class HandlerFeatures:
    """What a handler supports; only what crid really implements is True."""

    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False
    exec_fifo: bool = False  # runc 1.x: StartContainer opens its exec fifo itself (exec_fifo.py)


@dataclass(frozen=True)
class RuntimeHandler:
    name: str
    binary: str
    root: str
    features: HandlerFeatures


log = logging.getLogger(__name__)

# mount_setattr(2), which recursive read-only mounts need, came with Linux 5.12
_RRO_KERNEL = (5, 12)


async def probe_features(runtime: Runtime, config: Config | None = None) -> HandlerFeatures:
    """What the runtime's ``features`` says it supports; a runtime that cannot
    say gets nothing claimed for it. With ``config``, user namespaces are tried
    for real (userns_probe.py)."""
    doc = await runtime.features()
    options = doc.get("mountOptions")
    rro = isinstance(options, list) and "rro" in options and HOST.kernel_version() >= _RRO_KERNEL
    why_not = "not probed"
    if config is not None:
        why_not = await userns_probe.probe(runtime, config.state_dir, config.root_dir)
        if why_not:
            log.info(
                "no user namespaces for this handler", extra={"crid_fields": {"handler": runtime.name, "why": why_not}}
            )
    return HandlerFeatures(recursive_read_only_mounts=rro, user_namespaces=not why_not, exec_fifo=_is_runc_1(doc))


def _is_runc_1(features: Mapping[str, object]) -> bool:
    """Whether ``features`` is runc 1.x's, whose exec fifo crid can open itself (exec_fifo.py)."""
    annotations = features.get("annotations")
    version = annotations.get("org.opencontainers.runc.version") if isinstance(annotations, dict) else None
    return isinstance(version, str) and version.startswith("1.")


class Handlers:
    """The configured handlers, the OCI runtime of each, and what each supports (probed at startup)."""

    def __init__(
        self, config: Config, factory: RuntimeFactory = OciRuntime, criu_probe: CriuProbe = probe_criu
    ) -> None:
        self.config = config
        self.factory = factory
        self.features = {name: HandlerFeatures() for name in config.runtime.handlers}
        self.criu_probe = criu_probe
        self.criu: CriuSupport = UNPROBED  # whether CheckpointContainer can work (checkpoint.py)

    def runtime(self, handler: str) -> Runtime:
        """The runtime of a handler ("" is the default one)."""
        name = handler or self.config.runtime.default_handler
        h = self.config.runtime.handlers.get(name)
        if h is None:
            raise NotFound(
                f"no runtime handler {name!r} is configured (known: {', '.join(self.config.runtime.handlers)})"
            )
        return self.factory(name, h.binary, self.config.handler_root(name))

    async def probe(self) -> None:
        names = list(self.config.runtime.handlers)
        found, self.criu = await asyncio.gather(
            asyncio.gather(*(probe_features(self.runtime(n), self.config) for n in names)), self.criu_probe()
        )
        self.features = dict(zip(names, found, strict=True))
        log.info("runtime handler features", extra={"crid_fields": {n: vars(f) for n, f in self.features.items()}})
        log.info("checkpointing (criu check)", extra={"crid_fields": self.criu.describe()})

    def all(self) -> list[RuntimeHandler]:
        return [
            RuntimeHandler(name, h.binary, self.config.handler_root(name), self.features[name])
            for name, h in self.config.runtime.handlers.items()
        ]

    def supports_rro(self, name: str) -> bool:
        f = self.features.get(name or self.config.runtime.default_handler)
        return f is not None and f.recursive_read_only_mounts

    def exec_fifo_dir(self, name: str, container_id: str) -> str:
        """The runc state dir whose exec fifo starts ``container_id``, "" when the handler's runtime
        is not one whose fifo crid opens itself (it is then started by ``<runtime> start``)."""
        name = name or self.config.runtime.default_handler
        f = self.features.get(name)
        return os.path.join(self.config.handler_root(name), container_id) if f is not None and f.exec_fifo else ""

    def supports_userns(self, name: str) -> bool:
        f = self.features.get(name or self.config.runtime.default_handler)
        return f is not None and f.user_namespaces


def _usable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def runtime_condition(config: Config) -> Condition:
    """RuntimeReady: the default handler's binary is executable and crid's
    root and state directories are usable."""
    name = config.runtime.default_handler
    binary = config.runtime.handlers[name].binary
    if shutil.which(binary) is None:
        return Condition(
            False,
            "OCIRuntimeNotFound",
            f"the OCI runtime {binary} of the default handler {name!r} is missing or not executable",
        )
    for label, path in (("root", config.root_dir), ("state", config.state_dir)):
        if not _usable_dir(path):
            return Condition(False, "StorageNotUsable", f"crid's {label} directory {path} is not a writable directory")
    return Condition(True)


def apparmor_enabled() -> bool:
    """Whether the kernel has AppArmor on (crid applies no AppArmor profiles either way)."""
    try:
        with open("/sys/module/apparmor/parameters/enabled") as f:
            return f.read().strip().upper().startswith("Y")
    except OSError:
        return False
