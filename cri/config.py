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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_PATH = "/etc/crid/config.toml"

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


AbsPath = Annotated[str, Field(min_length=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GrpcConfig(_Section):
    socket: AbsPath = Field("/run/crid/crid.sock", description="Unix socket of the CRI gRPC server (mode 0660)")
    max_message_mib: int = Field(16, ge=1, le=256, description="Largest gRPC message accepted or sent, MiB")
    shutdown_grace_seconds: float = Field(
        10.0, ge=0, le=300, description="On SIGTERM, how long in-flight calls may still run"
    )

    _abs = field_validator("socket")(_absolute)


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="debug logs every RPC with its duration and code"
    )
    format: Literal["logfmt", "json"] = Field("logfmt", description="Log line format on stderr")


class MetricsConfig(_Section):
    enabled: bool = Field(True, description="Serve Prometheus metrics")
    address: str = Field("127.0.0.1:9191", description="HOST:PORT of the /metrics endpoint (port 0: any free)")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v


class HandlerConfig(_Section):
    binary: AbsPath = Field(description="Path of the runc-compatible OCI runtime binary")
    root: str = Field("", description="--root of the OCI runtime; empty: <state_dir>/runtime/<handler>")
    type: Literal["oci"] = Field("oci", description="Kind of runtime: oci (a CLI compatible with runc)")

    _abs = field_validator("binary")(_absolute)

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        return _absolute(v) if v else v


def _default_handlers() -> dict[str, HandlerConfig]:
    return {
        "runc": HandlerConfig(binary="/usr/sbin/runc"),
        "crun": HandlerConfig(binary="/usr/bin/crun"),
    }


class RuntimeConfig(_Section):
    default_handler: str = Field("runc", description="Handler used when a pod names no RuntimeClass handler")
    cgroup_driver: Literal["cgroupfs"] = Field(
        "cgroupfs",
        description="Cgroup driver, reported to kubelet by RuntimeConfig: only cgroupfs (crid has no systemd driver)",
    )
    container_events_queue: int = Field(
        1000, ge=1, le=1_000_000,
        description="Container events queued per GetContainerEvents client; a slow client's oldest are dropped",
    )  # fmt: skip
    handlers: dict[str, HandlerConfig] = Field(
        default_factory=_default_handlers,
        description="Runtime handlers by RuntimeClass name; listing any replaces this default set",
    )

    @field_validator("handlers")
    @classmethod
    def _names(cls, v: dict[str, HandlerConfig]) -> dict[str, HandlerConfig]:
        if not v:
            raise ValueError("at least one runtime handler is needed")
        for name in v:
            if not _HANDLER_NAME.match(name):
                raise ValueError(f"handler name {name!r} is not a DNS label (a-z, 0-9, '-')")
        return v

    @model_validator(mode="after")
    def _default_exists(self) -> "RuntimeConfig":
        if self.default_handler not in self.handlers:
            raise ValueError(
                f"default_handler {self.default_handler!r} is not one of the handlers "
                f"({', '.join(sorted(self.handlers))})"
            )
        return self


class CniConfig(_Section):
    conf_dir: AbsPath = Field("/etc/cni/net.d", description="Directory of CNI network configs")
    bin_dirs: list[str] = Field(
        default_factory=lambda: ["/usr/lib/cni", "/opt/cni/bin"], description="Directories of CNI plugins"
    )

    _abs = field_validator("conf_dir")(_absolute)

    @field_validator("bin_dirs")
    @classmethod
    def _bins(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one CNI bin dir is needed")
        return [_absolute(p) for p in v]


class ImagesConfig(_Section):
    registry_config_dir: AbsPath = Field(
        "/etc/crid/certs.d", description="Per-registry hosts.toml dirs, containerd's format"
    )
    pull_progress_timeout_seconds: float = Field(
        60.0, gt=0, description="Cancel a pull that makes no progress for this long"
    )
    max_concurrent_downloads: int = Field(3, ge=1, le=64, description="Layers downloaded at once per pull")

    _abs = field_validator("registry_config_dir")(_absolute)


class StreamingConfig(_Section):
    address: str = Field(
        "127.0.0.1:0", description="HOST:PORT of the exec/attach/port-forward server (port 0: any free)"
    )
    tls_cert_file: str = Field("", description="PEM certificate of the streaming server; empty: plain HTTP")
    tls_key_file: str = Field("", description="PEM private key of tls_cert_file")
    tls_client_ca_file: str = Field(
        "", description="PEM CA bundle: when set, clients must present a certificate it signed"
    )
    idle_timeout_seconds: float = Field(
        14400.0, gt=0, description="A session with no traffic in either direction for this long is closed"
    )
    stream_creation_timeout_seconds: float = Field(
        30.0, gt=0, description="How long a SPDY client may take to open the streams of a session"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        parse_address(v)
        return v

    @field_validator("tls_cert_file", "tls_key_file", "tls_client_ca_file")
    @classmethod
    def _tls_paths(cls, v: str) -> str:
        return _absolute(v) if v else v

    @model_validator(mode="after")
    def _tls_pair(self) -> "StreamingConfig":
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file (client certificates need TLS)")
        return self


class CdiConfig(_Section):
    spec_dirs: list[str] = Field(
        default_factory=lambda: ["/etc/cdi", "/var/run/cdi"],
        description=(
            "Directories of CDI spec files (*.json, *.yaml), read again when they change; "
            "a device in a later dir overrides one in an earlier dir; [] refuses every CDI device"
        ),
    )

    @field_validator("spec_dirs")
    @classmethod
    def _dirs(cls, v: list[str]) -> list[str]:
        return [_absolute(p) for p in v]


# ListPodSandboxMetrics groups crid collects (CRI-O's names; its hugetlb group is not collected)
POD_METRIC_GROUPS = ("cpu", "memory", "network", "oom", "process", "spec", "pressure", "disk", "diskIO")


class StatsConfig(_Section):
    # All by default: critest expects every group from a default runtime, and only a caller pays
    # (kubelet calls ListPodSandboxMetrics only with its PodAndContainerStatsFromCRI feature).
    included_pod_metrics: list[str] = Field(
        default_factory=lambda: ["all"],
        description=(
            "Metric groups of ListPodSandboxMetrics besides container_last_seen: "
            + ", ".join(POD_METRIC_GROUPS)
            + ', or ["all"] (the default: all groups); [] for CRI-O\'s minimal default, container_last_seen only'
        ),
    )

    @field_validator("included_pod_metrics")
    @classmethod
    def _groups(cls, v: list[str]) -> list[str]:
        if "all" in v:
            if len(v) > 1:
                raise ValueError('"all" must be the only element of included_pod_metrics')
            return v
        for group in v:
            if group == "hugetlb":
                raise ValueError("crid does not collect CRI-O's hugetlb metric group")
            if group not in POD_METRIC_GROUPS:
                raise ValueError(f"unknown pod metric group {group!r} (known: {', '.join(POD_METRIC_GROUPS)}, all)")
        if len(set(v)) != len(v):
            raise ValueError("included_pod_metrics lists a group twice")
        return v

    def pod_metric_groups(self) -> tuple[str, ...]:
        """The groups to collect, "all" spelled out."""
        return POD_METRIC_GROUPS if self.included_pod_metrics == ["all"] else tuple(self.included_pod_metrics)


class Config(_Section):
    root_dir: AbsPath = Field("/var/lib/crid", description="Persistent state: metadata, content, snapshots")
    state_dir: AbsPath = Field("/run/crid", description="Volatile state: runtime root, exit files, netns")
    grpc: GrpcConfig = Field(default_factory=lambda: GrpcConfig(), description="CRI gRPC server")
    log: LogConfig = Field(default_factory=lambda: LogConfig(), description="Logging to stderr")
    metrics: MetricsConfig = Field(default_factory=lambda: MetricsConfig(), description="Prometheus metrics")
    runtime: RuntimeConfig = Field(default_factory=lambda: RuntimeConfig(), description="OCI runtimes and cgroups")
    cni: CniConfig = Field(default_factory=lambda: CniConfig(), description="Pod networking")
    images: ImagesConfig = Field(default_factory=lambda: ImagesConfig(), description="Image pulls and the image store")
    streaming: StreamingConfig = Field(
        default_factory=lambda: StreamingConfig(),
        description="Streaming server for exec, attach and port-forward",
    )
    stats: StatsConfig = Field(default_factory=lambda: StatsConfig(), description="Pod stats and CRI metrics")
    cdi: CdiConfig = Field(default_factory=lambda: CdiConfig(), description="CDI devices (Container Device Interface)")

    _abs = field_validator("root_dir", "state_dir")(_absolute)

    def handler_root(self, name: str) -> str:
        """The --root directory of handler ``name``'s OCI runtime."""
        root = self.runtime.handlers[name].root
        return root or os.path.join(self.state_dir, "runtime", name)


# --- loading ----------------------------------------------------------------


def _key_path(loc: tuple[str | int, ...]) -> str:
    # pydantic adds the validator name ("function-after[...]") to some locations
    return ".".join(str(p) for p in loc if not str(p).startswith("function-"))


def _describe(err: Any) -> str:
    key = _key_path(err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{key}: unknown key"
    if err["type"] == "missing":
        return f"{key}: required key is missing"
    msg = str(err["msg"]).removeprefix("Value error, ")
    if "input" in err and err["type"] != "value_error" and not isinstance(err["input"], dict):
        msg += f" (got {err['input']!r})"
    return f"{key}: {msg}"


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    """Validate a parsed TOML document; ConfigError names every bad key."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(e) for e in exc.errors())
        raise ConfigError(f"{source}: {problems}") from None


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


def _render_section(model: BaseModel, table: str, out: list[str]) -> None:
    nested: list[tuple[str, BaseModel, str | None]] = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        path = f"{table}.{name}" if table else name
        if isinstance(value, BaseModel):
            nested.append((path, value, info.description))
        elif isinstance(value, dict):
            for i, (key, item) in enumerate(value.items()):
                nested.append((f"{path}.{key}", item, info.description if i == 0 else None))
        else:
            if info.description:
                out.append(f"# {info.description}")
            out.append(f"{name} = {_toml_value(value)}")
    for path, sub, description in nested:
        out.append("")
        if description:
            out.append(f"# {description}")
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
    return config.model_dump_json()
