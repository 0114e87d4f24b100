"""CNI network configuration: parsing, validation, selection and reload.

Like libcni, the conf dir holds ``.conflist`` files (a network with a chain
of plugins) and ``.conf``/``.json`` files (one plugin, wrapped into a list of
one). The lexicographically first valid file is the network; files that do
not parse are skipped and named in the not-ready message when none is left.
"""

import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Required, TypedDict, cast

from cri.log import fields

log = logging.getLogger(__name__)

CONF_EXTENSIONS = (".conf", ".conflist", ".json")
# Spec versions whose configs and results crid understands (1.1.0 results are 1.0.0 plus optional fields).
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")  # \Z: '$' would take a final newline
MAX_CONF_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """A network config file that crid cannot use (the message says why)."""


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split("."))
    except ValueError:
        return (0,)


class IpamObject(TypedDict, total=False):
    type: str


class PluginObject(TypedDict, total=False):
    """A plugin's object as written in the file, the keys crid reads checked; the
    others pass through to the plugin unread."""

    type: Required[str]
    ipam: IpamObject | None
    capabilities: dict[str, bool]


class ConfListObject(TypedDict, total=False):
    """A network config list as written (a single-plugin conf wrapped), checked like ``PluginObject``."""

    cniVersion: Required[str]
    name: Required[str]
    plugins: Required[list[PluginObject]]
    disableCheck: bool | str


@dataclass(frozen=True)
class PluginConf:
    type: str
    conf: PluginObject  # the plugin's object as written in the file
    capabilities: frozenset[str]  # capabilities the plugin declares as true

    @property
    def ipam_type(self) -> str:
        ipam = self.conf.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("type"), str):
            return str(ipam["type"])
        return ""


@dataclass(frozen=True)
class NetworkConfigList:
    name: str
    cni_version: str
    plugins: tuple[PluginConf, ...]
    disable_check: bool
    source: str  # the file it was loaded from
    raw: ConfListObject  # the conflist object (a single-plugin conf already wrapped)

    def binaries(self) -> list[str]:
        """Plugin executables the chain needs, including delegated IPAM plugins."""
        names: list[str] = []
        for p in self.plugins:
            for t in (p.type, p.ipam_type):
                if t and t not in names:
                    names.append(t)
        return names


def _plugin_type(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: no plugin 'type'")
    if "/" in value or value in (".", ".."):
        raise ConfigError(f"{where}: plugin type {value!r} is not a file name")
    return value


def _parse_plugin(obj: Any, index: int) -> PluginConf:
    where = f"plugins[{index}]"
    if not isinstance(obj, dict):
        raise ConfigError(f"{where} is not an object")
    ptype = _plugin_type(obj.get("type"), where)
    ipam = obj.get("ipam")
    if ipam is not None and not isinstance(ipam, dict):
        raise ConfigError(f"{where}: 'ipam' is not an object")
    if isinstance(ipam, dict) and "type" in ipam:
        _plugin_type(ipam["type"], f"{where}.ipam")
    caps = obj.get("capabilities", {})
    if not isinstance(caps, dict) or not all(isinstance(v, bool) for v in caps.values()):
        raise ConfigError(f"{where}: 'capabilities' must map names to true/false")
    return PluginConf(ptype, cast(PluginObject, obj), frozenset(k for k, v in caps.items() if v))


def _disable_check(value: Any) -> bool:
    # libcni accepts a bool or the strings "true"/"false"
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"'disableCheck' must be true or false, not {value!r}")


def parse_conflist(obj: Any, source: str) -> NetworkConfigList:
    """Validate a conflist object; raises ConfigError saying what is wrong."""
    if not isinstance(obj, dict):
        raise ConfigError("not a JSON object")
    name = obj.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError("no network 'name'")
    if not NAME_RE.match(name):
        raise ConfigError(f"network name {name!r} is invalid (letters, digits, '_', '.', '-'; alphanumeric first)")
    version = obj.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise ConfigError("no 'cniVersion'")
    if version not in SUPPORTED_VERSIONS:
        raise ConfigError(f"cniVersion {version!r} is not supported (supported: {', '.join(SUPPORTED_VERSIONS)})")
    plugins = obj.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ConfigError("no 'plugins' (a .conflist needs a non-empty list of plugins)")
    parsed = tuple(_parse_plugin(p, i) for i, p in enumerate(plugins))
    return NetworkConfigList(
        name=name,
        cni_version=version,
        plugins=parsed,
        disable_check=_disable_check(obj.get("disableCheck", False)),
        source=source,
        raw=cast(ConfListObject, obj),
    )


def wrap_conf(obj: Any) -> dict[str, Any]:
    """A single-plugin config as a list of one, the way libcni's ConfListFromConf does."""
    if not isinstance(obj, dict):
        raise ConfigError("not a JSON object")
    if not obj.get("type"):
        hint = "; perhaps this is a .conflist?" if "plugins" in obj else ""
        raise ConfigError(f"no plugin 'type'{hint}")
    return {"cniVersion": obj.get("cniVersion"), "name": obj.get("name"), "plugins": [obj]}


def parse_bytes(data: bytes, path: str) -> NetworkConfigList:
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"invalid JSON: {e}") from None
    except RecursionError:  # a small file can nest deeper than the parser's stack
        raise ConfigError("invalid JSON: nested too deeply") from None
    if not path.endswith(".conflist"):
        obj = wrap_conf(obj)
    return parse_conflist(obj, path)


def load_file(path: str) -> NetworkConfigList:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONF_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}") from None
    if len(data) > MAX_CONF_BYTES:
        raise ConfigError(f"larger than {MAX_CONF_BYTES} bytes")
    return parse_bytes(data, path)


def find_plugin(name: str, bin_dirs: list[str]) -> str | None:
    for d in bin_dirs:
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


# (file name, mtime_ns, size, inode) of every candidate file: any edit, rename or removal changes it
_Signature = tuple[tuple[str, int, int, int], ...]


@dataclass(frozen=True)
class Loaded:
    network: NetworkConfigList | None
    problem: str  # why there is no network (empty when there is one)


class ConfigSource:
    """The conf dir, re-read only when its files changed.

    Safe to call from the event loop (status) and from worker threads (setup):
    a check costs one scandir and a stat per candidate file.
    """

    def __init__(self, conf_dir: str) -> None:
        self.conf_dir = conf_dir
        self._lock = threading.Lock()
        self._signature: _Signature | None = None
        self._loaded = Loaded(None, "not loaded yet")

    def _scan(self) -> tuple[_Signature, list[str]]:
        entries: list[tuple[str, int, int, int]] = []
        with os.scandir(self.conf_dir) as it:
            for e in it:
                if not e.name.endswith(CONF_EXTENSIONS):
                    continue
                try:
                    st = e.stat()
                except OSError:
                    continue  # dangling symlink, or removed meanwhile
                if not e.is_file():
                    continue
                entries.append((e.name, st.st_mtime_ns, st.st_size, st.st_ino))
        entries.sort()
        return tuple(entries), [os.path.join(self.conf_dir, name) for name, *_ in entries]

    def current(self) -> Loaded:
        with self._lock:
            try:
                signature, files = self._scan()
            except FileNotFoundError:
                self._signature = None
                self._loaded = Loaded(None, f"no network config found in {self.conf_dir}: the directory does not exist")
                return self._loaded
            except OSError as e:
                self._signature = None
                self._loaded = Loaded(None, f"cannot read CNI conf dir {self.conf_dir}: {e.strerror}")
                return self._loaded
            if signature != self._signature:
                self._loaded = self._select(files)
                self._signature = signature
            return self._loaded

    def _select(self, files: list[str]) -> Loaded:
        if not files:
            return Loaded(None, f"no network config found in {self.conf_dir}")
        problems: list[str] = []
        for path in files:
            try:
                network = load_file(path)
            except ConfigError as e:
                problems.append(f"{os.path.basename(path)}: {e}")
                continue
            if problems:
                log.warning("skipped invalid CNI config files", extra=fields(using=path, skipped="; ".join(problems)))
            log.info("CNI network config loaded", extra=fields(file=path, network=network.name))
            return Loaded(network, "")
        return Loaded(None, f"no valid network config in {self.conf_dir}: {'; '.join(problems)}")
