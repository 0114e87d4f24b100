"""crid's configuration: the schema, its defaults, loading and validation.

The file is TOML (default /etc/crid/config.toml). Every key has a default; an
unknown key, a wrong type or a bad value is refused with the file, the key and
what is wrong. ``render_default()`` prints the complete default file with a
comment per key, and parses back to exactly the defaults.

Every layer reads its own section (``config.images``, ``config.runtime``, ...),
so the schema lives here rather than in cri.server.
"""

import ipaddress
import json
import os
import re
import tomllib
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Meta, Struct, field
from msgspec.structs import force_setattr

from cri.errors import QUOTE_LIMIT

DEFAULT_CONFIG_PATH = "/etc/crid/config.toml"

_S = TypeVar("_S", bound="_Section")

# RuntimeClass handler names are DNS labels (Kubernetes validates them so).
_HANDLER_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ConfigError(Exception):
    """A configuration file that cannot be used; the message names file and key."""


def _absolute(path: str) -> str:
    if not os.path.isabs(path):
        raise ValueError(f"must be an absolute path, got {path!r}")
    return os.path.normpath(path)


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` for IPv6) and check both parts."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"must be HOST:PORT, got {address!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} is out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"host must be an IP address or localhost, got {host!r}") from None
    return host, port


def _doc(description: str, **constraints: Any) -> Any:
    """A key's metadata: its comment in the rendered file, and its bounds."""
    return Meta(description=description, **constraints)


class _Invalid(ValueError):
    """A section's own check failed; ``key`` is the key it is about ("" for the section)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _check(section: Struct, key: str, check: Callable[[Any], Any]) -> None:
    """Run a key's check, keeping the value it returns (a normalized path)."""
    try:
        force_setattr(section, key, check(getattr(section, key)))
    except ValueError as exc:
        raise _Invalid(key, str(exc)) from None


def _address(address: str) -> str:
    parse_address(address)
    return address


def _optional_absolute(path: str) -> str:
    return _absolute(path) if path else path


def _absolute_list(paths: list[str]) -> list[str]:
    return [_absolute(p) for p in paths]


class _Section(Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # (each subclass repeats frozen=True: mypy does not inherit a dataclass_transform option)
    pass


class GrpcConfig(_Section, frozen=True):
    socket: Annotated[str, _doc("Unix socket of the CRI gRPC server (mode 0660)", min_length=1)] = "/run/crid/crid.sock"
    max_message_mib: Annotated[int, _doc("Largest gRPC message accepted or sent, MiB", ge=1, le=256)] = 16
    shutdown_grace_seconds: Annotated[
        float, _doc("On SIGTERM, how long in-flight calls may still run", ge=0, le=300)
    ] = 10.0

    def __post_init__(self) -> None:
        _check(self, "socket", _absolute)


class LogConfig(_Section, frozen=True):
    level: Annotated[
        Literal["debug", "info", "warning", "error"], _doc("debug logs every RPC with its duration and code")
    ] = "info"
    format: Annotated[Literal["logfmt", "json"], _doc("Log line format on stderr")] = "logfmt"


class MetricsConfig(_Section, frozen=True):
    enabled: Annotated[bool, _doc("Serve Prometheus metrics")] = True
    address: Annotated[str, _doc("HOST:PORT of the /metrics endpoint (port 0: any free)")] = "127.0.0.1:9191"

    def __post_init__(self) -> None:
        _check(self, "address", _address)


class HandlerConfig(_Section, frozen=True):
    binary: Annotated[str, _doc("Path of the runc-compatible OCI runtime binary", min_length=1)]
    root: Annotated[str, _doc("--root of the OCI runtime; empty: <state_dir>/runtime/<handler>")] = ""
    type: Annotated[Literal["oci"], _doc("Kind of runtime: oci (a CLI compatible with runc)")] = "oci"

    def __post_init__(self) -> None:
        _check(self, "binary", _absolute)
        _check(self, "root", _optional_absolute)


def _default_handlers() -> dict[str, HandlerConfig]:
    return {
        "runc": HandlerConfig(binary="/usr/sbin/runc"),
        "crun": HandlerConfig(binary="/usr/bin/crun"),
    }


class RuntimeConfig(_Section, frozen=True):
    default_handler: Annotated[str, _doc("Handler used when a pod names no RuntimeClass handler")] = "runc"
    cgroup_driver: Annotated[
        Literal["cgroupfs"],
        _doc("Cgroup driver, reported to kubelet by RuntimeConfig: only cgroupfs (crid has no systemd driver)"),
    ] = "cgroupfs"
    container_events_queue: Annotated[
        int,
        _doc("Container events queued per GetContainerEvents client; a slow client's oldest are dropped",
             ge=1, le=1_000_000),
    ] = 1000  # fmt: skip
    handlers: Annotated[
        dict[str, HandlerConfig],
        _doc("Runtime handlers by RuntimeClass name; listing any replaces this default set"),
    ] = field(default_factory=_default_handlers)

    def __post_init__(self) -> None:
        if not self.handlers:
            raise _Invalid("handlers", "at least one runtime handler is needed")
        for name in self.handlers:
            if not _HANDLER_NAME.match(name):
                raise _Invalid("handlers", f"handler name {name!r} is not a DNS label (a-z, 0-9, '-')")
        if self.default_handler not in self.handlers:
            raise _Invalid(
                "",
                f"default_handler {self.default_handler!r} is not one of the handlers "
                f"({', '.join(sorted(self.handlers))})",
            )


def _cni_bin_dirs(dirs: list[str]) -> list[str]:
    if not dirs:
        raise ValueError("at least one CNI bin dir is needed")
    return _absolute_list(dirs)


class CniConfig(_Section, frozen=True):
    conf_dir: Annotated[str, _doc("Directory of CNI network configs", min_length=1)] = "/etc/cni/net.d"
    bin_dirs: Annotated[list[str], _doc("Directories of CNI plugins")] = field(
        default_factory=lambda: ["/usr/lib/cni", "/opt/cni/bin"]
    )

    def __post_init__(self) -> None:
        _check(self, "conf_dir", _absolute)
        _check(self, "bin_dirs", _cni_bin_dirs)


class ImagesConfig(_Section, frozen=True):
    registry_config_dir: Annotated[str, _doc("Per-registry hosts.toml dirs, containerd's format", min_length=1)] = (
        "/etc/crid/certs.d"
    )
    pull_progress_timeout_seconds: Annotated[
        float, _doc("Cancel a pull that makes no progress for this long", gt=0)
    ] = 60.0
    max_concurrent_downloads: Annotated[int, _doc("Layers downloaded at once per pull", ge=1, le=64)] = 3

    def __post_init__(self) -> None:
        _check(self, "registry_config_dir", _absolute)


class StreamingConfig(_Section, frozen=True):
    address: Annotated[str, _doc("HOST:PORT of the exec/attach/port-forward server (port 0: any free)")] = "127.0.0.1:0"
    tls_cert_file: Annotated[str, _doc("PEM certificate of the streaming server; empty: plain HTTP")] = ""
    tls_key_file: Annotated[str, _doc("PEM private key of tls_cert_file")] = ""
    tls_client_ca_file: Annotated[
        str, _doc("PEM CA bundle: when set, clients must present a certificate it signed")
    ] = ""
    idle_timeout_seconds: Annotated[
        float, _doc("A session with no traffic in either direction for this long is closed", gt=0)
    ] = 14400.0
    stream_creation_timeout_seconds: Annotated[
        float, _doc("How long a SPDY client may take to open the streams of a session", gt=0)
    ] = 30.0

    def __post_init__(self) -> None:
        _check(self, "address", _address)
        for key in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            _check(self, key, _optional_absolute)
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise _Invalid("", "tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise _Invalid("", "tls_client_ca_file needs tls_cert_file and tls_key_file (client certificates need TLS)")


class CdiConfig(_Section, frozen=True):
    spec_dirs: Annotated[
        list[str],
        _doc(
            "Directories of CDI spec files (*.json, *.yaml), read again when they change; "
            "a device in a later dir overrides one in an earlier dir; [] refuses every CDI device"
        ),
    ] = field(default_factory=lambda: ["/etc/cdi", "/var/run/cdi"])

    def __post_init__(self) -> None:
        _check(self, "spec_dirs", _absolute_list)


# ListPodSandboxMetrics groups crid collects (CRI-O's names; its hugetlb group is not collected)
POD_METRIC_GROUPS = ("cpu", "memory", "network", "oom", "process", "spec", "pressure", "disk", "diskIO")


def _pod_metric_groups(groups: list[str]) -> list[str]:
    if "all" in groups:
        if len(groups) > 1:
            raise ValueError('"all" must be the only element of included_pod_metrics')
        return groups
    for group in groups:
        if group == "hugetlb":
            raise ValueError("crid does not collect CRI-O's hugetlb metric group")
        if group not in POD_METRIC_GROUPS:
            raise ValueError(f"unknown pod metric group {group!r} (known: {', '.join(POD_METRIC_GROUPS)}, all)")
    if len(set(groups)) != len(groups):
        raise ValueError("included_pod_metrics lists a group twice")
    return groups


class StatsConfig(_Section, frozen=True):
    # All by default: critest expects every group from a default runtime, and only a caller pays
    # (kubelet calls ListPodSandboxMetrics only with its PodAndContainerStatsFromCRI feature).
    included_pod_metrics: Annotated[
        list[str],
        _doc(
            "Metric groups of ListPodSandboxMetrics besides container_last_seen: "
            + ", ".join(POD_METRIC_GROUPS)
            + ', or ["all"] (the default: all groups); [] for CRI-O\'s minimal default, container_last_seen only'
        ),
    ] = field(default_factory=lambda: ["all"])

    def __post_init__(self) -> None:
        _check(self, "included_pod_metrics", _pod_metric_groups)

    def pod_metric_groups(self) -> tuple[str, ...]:
        """The groups to collect, "all" spelled out."""
        return POD_METRIC_GROUPS if self.included_pod_metrics == ["all"] else tuple(self.included_pod_metrics)


class Config(_Section, frozen=True):
    root_dir: Annotated[str, _doc("Persistent state: metadata, content, snapshots", min_length=1)] = "/var/lib/crid"
    state_dir: Annotated[str, _doc("Volatile state: runtime root, exit files, netns", min_length=1)] = "/run/crid"
    grpc: Annotated[GrpcConfig, _doc("CRI gRPC server")] = field(default_factory=GrpcConfig)
    log: Annotated[LogConfig, _doc("Logging to stderr")] = field(default_factory=LogConfig)
    metrics: Annotated[MetricsConfig, _doc("Prometheus metrics")] = field(default_factory=MetricsConfig)
    runtime: Annotated[RuntimeConfig, _doc("OCI runtimes and cgroups")] = field(default_factory=RuntimeConfig)
    cni: Annotated[CniConfig, _doc("Pod networking")] = field(default_factory=CniConfig)
    images: Annotated[ImagesConfig, _doc("Image pulls and the image store")] = field(default_factory=ImagesConfig)
    streaming: Annotated[StreamingConfig, _doc("Streaming server for exec, attach and port-forward")] = field(
        default_factory=StreamingConfig
    )
    stats: Annotated[StatsConfig, _doc("Pod stats and CRI metrics")] = field(default_factory=StatsConfig)
    cdi: Annotated[CdiConfig, _doc("CDI devices (Container Device Interface)")] = field(default_factory=CdiConfig)

    def __post_init__(self) -> None:
        _check(self, "root_dir", _absolute)
        _check(self, "state_dir", _absolute)

    def handler_root(self, name: str) -> str:
        """The --root directory of handler ``name``'s OCI runtime."""
        root = self.runtime.handlers[name].root
        return root or os.path.join(self.state_dir, "runtime", name)


# --- loading ----------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


def _bare(tp: Any) -> Any:
    return get_args(tp)[0] if get_origin(tp) is Annotated else tp


def _struct_type(tp: Any) -> type[Struct] | None:
    tp = _bare(tp)
    return tp if isinstance(tp, type) and issubclass(tp, Struct) else None


def _table_of(tp: Any) -> type[Struct] | None:
    """The section type of a table of sections (``dict[str, HandlerConfig]``), else None."""
    tp = _bare(tp)
    return _struct_type(get_args(tp)[1]) if get_origin(tp) is dict else None


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else f"{text[:QUOTE_LIMIT]}… ({len(text)} characters)"


def _convert(value: Any, tp: Any, key: str, problems: list[str]) -> Any:
    """One value of a plain type (msgspec checks its type and bounds, strictly)."""
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError as exc:
        # "Expected `int` >= 1 - at `$[2]`": the location goes to the key
        message, _, where = str(exc).partition(" - at `$")
        choices = get_args(_bare(tp))
        if message.startswith("Invalid enum value") and choices:
            message = "must be one of " + ", ".join(repr(c) for c in choices)
        if ", got " not in message:
            message += f" (got {_shown(value)})"
        problems.append(f"{key}{where.rstrip('`')}: {message}")
        return None


def _build(cls: type[_S], data: Any, path: str, problems: list[str]) -> _S | None:
    """``data`` as a ``cls``; every problem found is appended to ``problems``, not only the first."""
    if not isinstance(data, dict):
        problems.append(f"{path or '(top level)'}: must be a table (got {_shown(data)})")
        return None
    before = len(problems)
    fields = msgspec.structs.fields(cls)
    known = {f.name for f in fields}
    problems.extend(f"{_join(path, key)}: unknown key" for key in data if key not in known)
    values: dict[str, Any] = {}
    for f in fields:
        key = _join(path, f.name)
        if f.name not in data:
            if f.required:
                problems.append(f"{key}: required key is missing")
            continue
        value, sub, table_of = data[f.name], _struct_type(f.type), _table_of(f.type)
        if sub is not None:
            values[f.name] = _build(sub, value, key, problems)
        elif table_of is not None:
            tables = _convert(value, dict[str, Any], key, problems) or {}
            values[f.name] = {name: _build(table_of, t, f"{key}.{name}", problems) for name, t in tables.items()}
        else:
            values[f.name] = _convert(value, f.type, key, problems)
    if len(problems) > before:
        return None
    try:
        return cls(**values)
    except _Invalid as exc:
        problems.append(f"{_join(path, exc.key)}: {exc}")
        return None


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document; ConfigError names every bad key."""
    problems: list[str] = []
    config = _build(Config, data, "", problems)
    if config is None:
        raise ConfigError(f"{source}: {'; '.join(problems)}")
    return config


def load(path: str | None, overrides: dict[str, Any] | None = None) -> Config:
    """Load ``path`` (the default path may be absent: defaults apply), then apply
    ``overrides`` given as dotted keys (``{"grpc.socket": "/tmp/x.sock"}``)."""
    data: dict[str, Any] = {}
    source = path or DEFAULT_CONFIG_PATH
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if path is not None:
            raise ConfigError(f"{source}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return from_dict(data, source)


# --- rendering --------------------------------------------------------------


def _toml_value(value: Any) -> str:
    # JSON strings, numbers, booleans and lists of them are valid TOML values
    return json.dumps(value)


def _description(hint: Any) -> str | None:
    return next((m.description for m in getattr(hint, "__metadata__", ()) if isinstance(m, Meta)), None)


def _render_section(section: Struct, table: str, out: list[str]) -> None:
    nested: list[tuple[str, Struct, str | None]] = []
    hints = get_type_hints(type(section), include_extras=True)
    for name in section.__struct_fields__:
        value = getattr(section, name)
        path = f"{table}.{name}" if table else name
        description = _description(hints[name])
        if isinstance(value, Struct):
            nested.append((path, value, description))
        elif isinstance(value, dict):
            for i, (key, item) in enumerate(value.items()):
                nested.append((f"{path}.{key}", item, description if i == 0 else None))
        else:
            if description:
                out.append(f"# {description}")
            out.append(f"{name} = {_toml_value(value)}")
    for path, sub, sub_description in nested:
        out.append("")
        if sub_description:
            out.append(f"# {sub_description}")
        out.append(f"[{path}]")
        _render_section(sub, path, out)


def render(config: Config) -> str:
    """The TOML text of ``config``, every key present, with a comment per key."""
    out = [
        "# crid configuration. Every key is shown with its default value;",
        "# delete what you do not change. Check a file with: crid config check FILE",
        "",
    ]
    _render_section(config, "", out)
    return "\n".join(out) + "\n"


def render_default() -> str:
    return render(Config())


def as_json(config: Config) -> str:
    """The effective configuration as JSON (Status verbose info)."""
    return msgspec.json.encode(config).decode()
