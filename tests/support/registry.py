"""A real Docker Distribution registry (Debian's ``docker-registry``, v2.8) for tests.

:class:`Registry` runs ``docker-registry serve CONFIG`` on a free loopback
port with its own storage under a work dir, plain HTTP or TLS (CA and server
certificate made on the fly, optional client certificates), anonymous, Basic
(htpasswd, bcrypt) or token auth (with a :class:`TokenServer` it starts and
stops). It counts requests by parsing the registry's access log, can tamper
with or remove a stored blob, and renders a containerd-style ``hosts.toml``.
A mirror that is down (refuses, answers 503, never answers) is
:class:`tests.support.down_mirror.DownMirror`.

    with Registry(tmp_path / "reg", auth="token") as reg:
        digest = reg.push("library/busybox", "latest", busybox_image())
        assert reg.blob_downloads(layer.digest) == 0
"""

import json
import os
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Self

from tests.support.certs import SERVER_HOSTS, CertPair, make_ca, make_client_cert, make_server_cert
from tests.support.daemon import deep_merge, free_port, start_on_a_free_port
from tests.support.oci_build import Target
from tests.support.registry_client import RegistryClient
from tests.support.token_server import TokenServer

REGISTRY_BINARY = "/usr/bin/docker-registry"
HTPASSWD = "htpasswd"
STARTUP_TIMEOUT = 20.0
DEFAULT_USERS = {"crid": "crid-secret"}

AuthMode = Literal["none", "basic", "token"]


# gorilla/handlers combined log: host ident user [time] "METHOD URI PROTO" status size "referer" "agent"
_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>\S+) (?P<uri>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<size>\d+|-)(?: "[^"]*" "(?P<agent>[^"]*)")?'
)


@dataclass(frozen=True)
class AccessRecord:
    """One request the registry served (from its access log)."""

    method: str
    uri: str  # path and query as sent
    status: int
    size: int  # response body bytes
    user_agent: str
    remote: str

    @property
    def path(self) -> str:
        return self.uri.partition("?")[0]


def parse_access_log(text: str) -> list[AccessRecord]:
    out = []
    for line in text.splitlines():
        m = _ACCESS_LINE.match(line)
        if m is None:
            continue
        size = m.group("size")
        out.append(
            AccessRecord(
                method=m.group("method"),
                uri=m.group("uri"),
                status=int(m.group("status")),
                size=0 if size == "-" else int(size),
                user_agent=m.group("agent") or "",
                remote=m.group("remote"),
            )
        )
    return out


class Registry:
    """One docker-registry process. ``start()`` returns once ``/v2/`` answers;
    ``stop()`` kills it (and the token server) and waits for it.

    ``workdir`` holds config, certs, logs and storage; when None a temp dir is
    made and removed by ``stop()``. ``users`` (name -> password, default
    ``DEFAULT_USERS`` when auth is on) are the htpasswd or token-server users.
    """

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        tls: bool = False,
        client_auth: bool = False,
        auth: AuthMode = "none",
        users: Mapping[str, str] | None = None,
        anonymous_pull: bool = False,
        token_header: Literal["kid", "x5c"] = "kid",
        token_expires_in: int = 300,
        token_post: bool = True,
        hosts: tuple[str, ...] = SERVER_HOSTS,
        extra_config: Mapping[str, Any] | None = None,
        binary: str = REGISTRY_BINARY,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="crid-registry-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.tls = tls or client_auth
        self.client_auth = client_auth
        self.auth = auth
        self.users = dict(users if users is not None else (DEFAULT_USERS if auth != "none" else {}))
        self.anonymous_pull = anonymous_pull
        self.extra_config = dict(extra_config or {})
        self.binary = binary
        self.storage_dir = self.workdir / "storage"
        self.config_path = self.workdir / "config.yml"
        self.log_path = self.workdir / "registry.log"
        self.access_log_path = self.workdir / "access.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._mark = 0
        self.ca: CertPair | None = None
        self.server_cert: CertPair | None = None
        self.client_cert: CertPair | None = None
        if self.tls:
            certs = self.workdir / "certs"
            self.ca = make_ca(certs)
            self.server_cert = make_server_cert(certs, self.ca, hosts)
            if client_auth:
                self.client_cert = make_client_cert(certs, self.ca)
        self.token_server: TokenServer | None = None
        if auth == "token":
            self.token_server = TokenServer(
                self.workdir / "token",
                users=self.users,
                anonymous_pull=anonymous_pull,
                header=token_header,
                expires_in=token_expires_in,
                post=token_post,
            )
        self.htpasswd_path: Path | None = None
        if auth == "basic":
            self.htpasswd_path = self.workdir / "htpasswd"
            self.htpasswd_path.write_text("".join(htpasswd_line(u, p) for u, p in self.users.items()))

    # ------------------------------------------------------------ addresses and credentials

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry host as it appears in image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca_path(self) -> Path | None:
        return self.ca.cert if self.ca else None

    @property
    def credentials(self) -> tuple[str, str] | None:
        """The first user's (name, password), None without auth."""
        return next(iter(self.users.items())) if self.auth != "none" and self.users else None

    def ssl_context(self, client_cert: bool = True) -> ssl.SSLContext | None:
        """A client context trusting the registry's CA (with the client certificate when required)."""
        if not self.tls or self.ca is None:
            return None
        ctx = ssl.create_default_context(cafile=str(self.ca.cert))
        if client_cert and self.client_cert is not None:
            ctx.load_cert_chain(str(self.client_cert.cert), str(self.client_cert.key))
        return ctx

    def client(self, auth: tuple[str, str] | Literal["default"] | None = "default") -> RegistryClient:
        creds = self.credentials if auth == "default" else auth
        return RegistryClient(self.url, auth=creds, ssl_context=self.ssl_context())

    def push(
        self, repo: str, ref: str | None, target: Target, auth: tuple[str, str] | Literal["default"] | None = "default"
    ) -> str:
        """Push with the first user's credentials; returns the manifest digest."""
        return self.client(auth).push(repo, ref, target)

    def hosts_toml(self, upstream: str | None = None, capabilities: tuple[str, ...] = ("pull", "resolve")) -> str:
        """containerd hosts.toml text: this registry itself, or (``upstream``
        like ``registry.k8s.io``) this registry as the mirror of ``upstream``."""
        server = f"https://{upstream}" if upstream else self.url
        lines = [f'server = "{server}"', "", f'[host."{self.url}"]']
        lines.append("  capabilities = [" + ", ".join(f'"{c}"' for c in capabilities) + "]")
        if self.ca is not None:
            lines.append(f'  ca = "{self.ca.cert}"')
        if self.client_cert is not None:
            lines.append(f'  client = [["{self.client_cert.cert}", "{self.client_cert.key}"]]')
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------ lifecycle

    def config(self) -> dict[str, Any]:
        http: dict[str, Any] = {
            "addr": f"127.0.0.1:{self.port}",
            "secret": secrets.token_hex(16),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        }
        if self.tls:
            assert self.server_cert is not None and self.ca is not None
            http["tls"] = {"certificate": str(self.server_cert.cert), "key": str(self.server_cert.key)}
            if self.client_auth:
                http["tls"]["clientcas"] = [str(self.ca.cert)]
        cfg: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": http,
        }
        if self.auth == "basic":
            cfg["auth"] = {"htpasswd": {"realm": "crid-test-registry", "path": str(self.htpasswd_path)}}
        elif self.auth == "token":
            assert self.token_server is not None
            cfg["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.token_server.cert_path),
                }
            }
        return deep_merge(cfg, self.extra_config)

    def start(self) -> Self:
        if self.token_server is not None and not self.token_server.running:
            self.token_server.start()
        start_on_a_free_port(
            self._start_once, self.stop, lambda: f"docker-registry could not get a free port:\n{self.log_text()}"
        )
        return self

    def _start_once(self) -> bool:
        """One attempt; False when the port was taken meanwhile."""
        self.port = free_port()
        self.storage_dir.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: distribution's config loader reads it as is
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log, open(self.access_log_path, "ab") as access:
            self.proc = subprocess.Popen(
                [self.binary, "serve", str(self.config_path)],
                stdout=access,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_text()[log_start:]
                self.proc = None
                if "address already in use" in text:
                    return False
                raise RuntimeError(f"docker-registry exited at startup:\n{text}")
            if self._answers():
                self._mark = self.access_log_path.stat().st_size
                return True
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry did not answer within {STARTUP_TIMEOUT}s:\n{self.log_text()}")

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/", timeout=2, context=self.ssl_context()):
                return True
        except urllib.error.HTTPError:
            return True  # 401 is an answer
        except (OSError, ssl.SSLError):
            return False

    def stop(self) -> None:
        """Kill the registry (TERM, then KILL after 5 s), reap it, stop the token server."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        if self.token_server is not None:
            self.token_server.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------ request counting

    def settle(self, timeout: float = 5.0) -> None:
        """Make sure every request answered so far is in the access log: send a
        marker request and wait for its line (lines are written after the response)."""
        marker = f"/crid-sync-{secrets.token_hex(8)}"
        try:
            with urllib.request.urlopen(self.url + marker, timeout=timeout, context=self.ssl_context()):
                pass
        except urllib.error.HTTPError:
            pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.access_log_path.read_text(errors="replace"):
                time.sleep(0.02)
                return
            time.sleep(0.01)
        raise RuntimeError("the registry did not log the marker request")

    def requests(self, settle: bool = True) -> list[AccessRecord]:
        """Requests since start() or the last reset_requests(), oldest first (markers left out)."""
        if settle:
            self.settle()
        with open(self.access_log_path, "rb") as f:
            f.seek(self._mark)
            text = f.read().decode(errors="replace")
        return [r for r in parse_access_log(text) if not r.path.startswith("/crid-sync-")]

    def reset_requests(self) -> None:
        self.settle()
        self._mark = self.access_log_path.stat().st_size

    def count(
        self, method: str | None = None, path: str | None = None, status: int | tuple[int, ...] | None = None
    ) -> int:
        """Requests matching a method, a path regex (searched) and a status (or several)."""
        statuses = (status,) if isinstance(status, int) else status
        return sum(
            1
            for r in self.requests()
            if (method is None or r.method == method)
            and (path is None or re.search(path, r.path))
            and (statuses is None or r.status in statuses)
        )

    def blob_downloads(self, digest: str, repo: str | None = None) -> int:
        """Successful GETs of one blob (in ``repo``, or any): what "downloaded once" counts."""
        where = re.escape(repo) if repo else ".+"
        return self.count("GET", rf"^/v2/{where}/blobs/{re.escape(digest)}$", (200, 206))

    def manifest_gets(self, ref: str | None = None) -> int:
        """GETs of manifests (of one tag or digest when given), any status."""
        tail = re.escape(ref) if ref else "[^/]+"
        return self.count("GET", rf"^/v2/.+/manifests/{tail}$")

    # ------------------------------------------------------------ storage

    def blob_path(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        return self.storage_dir / "docker/registry/v2/blobs" / algo / hexdigest[:2] / hexdigest / "data"

    def tamper_blob(self, digest: str, data: bytes | None = None) -> bytes:
        """Change a stored blob so that it no longer matches its digest: one
        byte in the middle flipped (same size), or replaced by ``data``.
        Returns the bytes now served."""
        path = self.blob_path(digest)
        if data is None:
            buf = bytearray(path.read_bytes())
            buf[len(buf) // 2] ^= 0xFF
            data = bytes(buf)
        path.write_bytes(data)
        return data

    def remove_blob(self, digest: str) -> None:
        """Delete a blob's data behind the registry's back (manifests still point at it)."""
        shutil.rmtree(self.blob_path(digest).parent)


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd line (``htpasswd -Bbn``; distribution accepts only bcrypt)."""
    out = subprocess.run(
        [HTPASSWD, "-Bbn", user, password], capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
    ).stdout
    return out.strip() + "\n"
