"""Runtime handlers (RuntimeClass handler -> OCI runtime binary) and whether
the runtime side of crid can work at all."""

import os
import shutil
from dataclasses import dataclass

from cri.conditions import Condition
from cri.config import Config


@dataclass(frozen=True)
class HandlerFeatures:
    """What a handler supports; only what crid really implements is True."""

    recursive_read_only_mounts: bool = False
    user_namespaces: bool = False


@dataclass(frozen=True)
class RuntimeHandler:
    name: str
    binary: str
    root: str
    features: HandlerFeatures


def handlers(config: Config) -> list[RuntimeHandler]:
    return [
        RuntimeHandler(name, h.binary, config.handler_root(name), HandlerFeatures())
        for name, h in config.runtime.handlers.items()
    ]


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
