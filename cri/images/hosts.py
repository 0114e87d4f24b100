"""Registry hosts, configured in containerd's ``hosts.toml`` format.

For registry ``HOST`` (``docker.io``, ``127.0.0.1:5000``, ...) crid reads
``<registry_config_dir>/HOST/hosts.toml``, else ``<dir>/_default/hosts.toml``,
else uses the registry itself (``registry-1.docker.io`` for docker.io). The
``[host."..."]`` entries are tried in file order, then ``server``; a pull
falls back to the next host when one fails. The file is read for every
pull, so edits apply without a restart, as with containerd.
"""

import functools
import os
import re
import ssl
import tomllib
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from cri.errors import FailedPrecondition, quote

DEFAULT_CAPABILITIES = frozenset({"pull", "resolve", "push"})
KNOWN_CAPABILITIES = DEFAULT_CAPABILITIES
_HOST_KEYS = {"capabilities", "ca", "client", "skip_verify", "override_path", "header"}
_TOP_KEYS = _HOST_KEYS | {"server", "host"}
# what containerd's url.Parse takes as a host: a DNS name or a bracketed IPv6 address, and a port
_HOST_PORT_RE = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?\Z")


def _is_loopback(hostname: str) -> bool:
    return hostname in ("localhost", "::1") or hostname.startswith("127.")


@dataclass(frozen=True)
class RegistryHost:
    scheme: str
    netloc: str
    path: str = "/v2"
    capabilities: frozenset[str] = DEFAULT_CAPABILITIES
    ca: tuple[str, ...] = ()
    client: tuple[tuple[str, str], ...] = ()  # (cert, key); key may be "" when inside the cert file
    skip_verify: bool = False
    headers: tuple[tuple[str, str], ...] = ()

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.path}"

    def url(self, suffix: str) -> str:
        return self.base + suffix

    def ssl_context(self) -> ssl.SSLContext | bool | None:
        """What the HTTP client's ``ssl`` takes for this host (cri/images/http.py): None for
        plain HTTP; True for the system's CAs and nothing else (one context, made at the
        first https request); else a context of this host's settings. Loading the system's
        CAs takes 50 ms of CPU and 2 MiB here, and hosts are read again for every
        pull: a context is shared by the hosts with the same settings and files."""
        if self.scheme != "https":
            return None
        if not (self.ca or self.client or self.skip_verify):
            return True
        files = tuple(_file_key(path) for path in self.ca)
        clients = tuple((_file_key(cert), _file_key(key) if key else None) for cert, key in self.client)
        return _tls_context(files, clients, self.skip_verify)


FileKey = tuple[str, int, int]  # path, mtime (ns), size: a file rewritten in place gives a new context


def _file_key(path: str) -> FileKey:
    try:
        st = os.stat(path)
    except OSError:
        return (path, -1, -1)  # not cached by this key's context: loading it raises
    return (path, st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _tls_context(
    ca: tuple[FileKey, ...], client: tuple[tuple[FileKey, FileKey | None], ...], skip_verify: bool
) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for path, _, _ in ca:
        ctx.load_verify_locations(cafile=path)
    for (cert, _, _), key in client:
        ctx.load_cert_chain(cert, key[0] if key else None)
    if skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def default_hosts(registry: str) -> list[RegistryHost]:
    if registry == "docker.io":
        return [RegistryHost("https", "registry-1.docker.io")]
    hostname = urlsplit(f"//{registry}").hostname or registry
    # containerd's CRI uses plain HTTP by default for registries on loopback
    return [RegistryHost("http" if _is_loopback(hostname) else "https", registry)]


def _host_dir(config_dir: str, registry: str) -> str | None:
    for name in (registry, "_default"):
        d = os.path.join(config_dir, name)
        if os.path.isfile(os.path.join(d, "hosts.toml")):
            return d
    return None


def _strings(value: Any, what: str, source: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise FailedPrecondition(f"{source}: {what} must be a string or a list of strings")


def _clients(value: Any, base_dir: str, source: str) -> tuple[tuple[str, str], ...]:
    # containerd accepts "cert.pem", ["cert", "key"] or [["cert", "key"], ...]
    if isinstance(value, str):
        pairs: list[list[str]] = [[value]]
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        pairs = [list(value)]
    elif isinstance(value, list) and all(isinstance(v, list) for v in value):
        pairs = value
    else:
        raise FailedPrecondition(f"{source}: client must be a path, [cert, key] or a list of those")
    out = []
    for pair in pairs:
        if not 1 <= len(pair) <= 2 or not all(isinstance(p, str) for p in pair):
            raise FailedPrecondition(f"{source}: client entry {pair!r} must be [cert] or [cert, key]")
        cert = os.path.join(base_dir, pair[0])
        key = os.path.join(base_dir, pair[1]) if len(pair) == 2 else ""
        out.append((cert, key))
    return tuple(out)


def _table(value: Any, what: str, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FailedPrecondition(f"{source}: {what} must be a table, not {quote(value)}")
    return value


def _split_url(url: str) -> SplitResult | None:
    """``url`` split, or None unless it is http(s)://HOST[:PORT][/PATH]."""
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed '[', or characters that NFKC-normalise to '/', '#', ...
        return None
    hostport = _HOST_PORT_RE.match(parts.netloc)
    if parts.scheme not in ("http", "https") or not hostport:
        return None
    port = hostport.group(1)
    return parts if port is None or 1 <= int(port) <= 65535 else None


def _parse_host(url: str, table: Any, base_dir: str, source: str) -> RegistryHost:
    table = _table(table, f"host {quote(url)}", source)
    unknown = set(table) - _HOST_KEYS
    if unknown:
        raise FailedPrecondition(f"{source}: unknown key(s) {sorted(unknown)} for host {url!r}")
    if "://" not in url:
        url = "https://" + url
    parts = _split_url(url)
    if parts is None:
        raise FailedPrecondition(f"{source}: host {quote(url)} must be http(s)://HOST[:PORT][/PATH]")
    path = parts.path.rstrip("/")
    if not path:
        path = "/v2"
    elif not table.get("override_path", False) and not path.endswith("/v2"):
        path += "/v2"
    caps = frozenset(_strings(table.get("capabilities", sorted(DEFAULT_CAPABILITIES)), "capabilities", source))
    if caps - KNOWN_CAPABILITIES:
        raise FailedPrecondition(f"{source}: unknown capabilities {sorted(caps - KNOWN_CAPABILITIES)}")
    skip_verify = table.get("skip_verify", False)
    if not isinstance(skip_verify, bool):
        raise FailedPrecondition(f"{source}: skip_verify must be true or false")
    headers: list[tuple[str, str]] = []
    for name, value in _table(table.get("header", {}), f"header of host {quote(url)}", source).items():
        for v in _strings(value, f"header {name}", source):
            headers.append((name, v))
    return RegistryHost(
        scheme=parts.scheme,
        netloc=parts.netloc,
        path=path,
        capabilities=caps,
        ca=tuple(os.path.join(base_dir, p) for p in _strings(table.get("ca", []), "ca", source)),
        client=_clients(table["client"], base_dir, source) if "client" in table else (),
        skip_verify=skip_verify,
        headers=tuple(headers),
    )


def load_hosts(config_dir: str, registry: str) -> list[RegistryHost]:
    """The hosts to try for ``registry``, in order."""
    host_dir = _host_dir(config_dir, registry)
    if host_dir is None:
        return default_hosts(registry)
    source = os.path.join(host_dir, "hosts.toml")
    try:
        with open(source, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise FailedPrecondition(f"{source}: {exc}") from None
    except UnicodeDecodeError:  # TOML is UTF-8; tomllib decodes without saying where
        raise FailedPrecondition(f"{source}: not UTF-8 text") from None
    unknown = set(doc) - _TOP_KEYS
    if unknown:
        raise FailedPrecondition(f"{source}: unknown key(s) {sorted(unknown)}")
    hosts = [_parse_host(url, t, host_dir, source) for url, t in _table(doc.get("host", {}), "host", source).items()]
    server = doc.get("server")
    if server is not None:
        if not isinstance(server, str):
            raise FailedPrecondition(f"{source}: server must be a URL string")
        top = {k: v for k, v in doc.items() if k in _HOST_KEYS}
        hosts.append(_parse_host(server, top, host_dir, source))
    elif not hosts or os.path.basename(host_dir) != "_default":
        # no server: the registry itself comes last (as containerd does), except
        # that a _default file with only mirrors keeps them as the whole list
        if not hosts:
            hosts = default_hosts(registry)
        else:
            hosts.extend(default_hosts(registry))
    return hosts
