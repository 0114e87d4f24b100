"""A Docker token server (the ``auth: token`` flow of Docker Distribution) on loopback.

``GET /token?service=S&scope=repository:foo:pull,push`` with optional Basic
credentials answers ``{"token", "access_token", "expires_in", "issued_at"}``;
``POST /token`` takes the OAuth2 form (``grant_type=password`` or
``refresh_token``) as containerd sends it. Tokens are RS256 JWTs with the
claims distribution checks (iss, sub, aud, exp, nbf, iat, jti, access); the
header carries the libtrust ``kid`` of the signing key (distribution 2.8 looks
it up among the keys of its ``rootcertbundle``) or, with ``header="x5c"``,
the signing certificate. Every request is recorded.
"""

import base64
import json
import secrets
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal, Self

from tests.support.certs import SigningKey, make_signing_key

# (user or None for anonymous, resource type, resource name, requested actions) -> granted actions
GrantPolicy = Callable[[str | None, str, str, list[str]], list[str]]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, claims) of a JWT, signature not checked."""
    head, body, _ = token.split(".")
    return json.loads(b64url_decode(head)), json.loads(b64url_decode(body))


def parse_scope(scope: str) -> tuple[str, str, list[str]] | None:
    """``repository:library/busybox:pull,push`` -> ("repository", "library/busybox", ["pull", "push"])."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if not kind or not name:
        return None
    return kind, name, [a for a in actions.split(",") if a]


@dataclass
class TokenRequest:
    method: str
    path: str
    status: int
    user: str | None  # the authenticated user, None when anonymous (or refused)
    scopes: list[str] = field(default_factory=list)
    service: str | None = None
    grant_type: str | None = None  # POST only
    granted: list[dict[str, Any]] = field(default_factory=list)


class TokenServer:
    """Issue tokens for a registry that trusts ``cert_path`` (its ``rootcertbundle``).

    ``users`` maps names to passwords. Authenticated users get every action
    they ask for; anonymous requests get ``pull`` when ``anonymous_pull``,
    else a token without access (the registry then answers 401). Wrong
    credentials get a 401 here. ``grant`` replaces that policy. ``post``
    False makes POST answer 405 (servers without the OAuth2 endpoint).
    ``fail_status`` set to e.g. 503 makes every request fail with it.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        users: Mapping[str, str] | None = None,
        anonymous_pull: bool = False,
        service: str = "crid-test-registry",
        issuer: str = "crid-test-token-issuer",
        expires_in: int = 300,
        header: Literal["kid", "x5c"] = "kid",
        grant: GrantPolicy | None = None,
        post: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        signing_key: SigningKey | None = None,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.users = dict(users or {})
        self.anonymous_pull = anonymous_pull
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.header = header
        self.grant = grant
        self.post = post
        self.ssl_context = ssl_context
        self.fail_status: int | None = None
        self.key = signing_key or make_signing_key(workdir)
        self._refresh: dict[str, str] = {}  # refresh token -> user
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        server.daemon_threads = True
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="token-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def realm(self) -> str:
        return f"{self.url}/token"

    @property
    def cert_path(self) -> Path:
        """The certificate to give the registry as ``rootcertbundle``."""
        return self.key.cert

    @property
    def key_id(self) -> str:
        return self.key.key_id

    # ------------------------------------------------------------ records

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, req: TokenRequest) -> None:
        with self._lock:
            self._requests.append(req)

    # ------------------------------------------------------------ tokens

    def check_password(self, user: str, password: str) -> bool:
        want = self.users.get(user)
        return want is not None and secrets.compare_digest(want.encode(), password.encode())

    def grant_access(self, user: str | None, scopes: list[str]) -> list[dict[str, Any]]:
        access: list[dict[str, Any]] = []
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            kind, name, actions = parsed
            if self.grant is not None:
                granted = self.grant(user, kind, name, actions)
            elif user is not None:
                granted = list(actions)
            else:
                granted = ["pull"] if self.anonymous_pull and "pull" in actions else []
            access.append({"type": kind, "name": name, "actions": granted})
        return access

    def issue(
        self,
        user: str | None,
        access: list[dict[str, Any]],
        *,
        audience: str | None = None,
        expires_in: int | None = None,
        not_before: int | None = None,
        issuer: str | None = None,
    ) -> str:
        """A signed JWT; the keyword arguments make broken ones (expired, wrong audience...)."""
        now = int(time.time())
        life = self.expires_in if expires_in is None else expires_in
        header: dict[str, Any] = {"typ": "JWT", "alg": "RS256"}
        if self.header == "x5c":
            header["x5c"] = [base64.b64encode(self.key.cert_der).decode()]
        else:
            header["kid"] = self.key.key_id
        claims = {
            "iss": issuer or self.issuer,
            "sub": user or "",
            "aud": audience or self.service,
            "exp": now + life,
            "nbf": (now - 10) if not_before is None else not_before,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
        return signing_input + "." + b64url(self.key.rsa.sign_rs256(signing_input.encode()))

    def _response(self, user: str | None, token: str, offline: bool) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }
        if offline and user is not None:
            refresh = secrets.token_urlsafe(24)
            with self._lock:
                self._refresh[refresh] = user
            doc["refresh_token"] = refresh
        return doc

    def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """The whole protocol, HTTP aside: (status, JSON body)."""
        url = urllib.parse.urlsplit(path)
        query = urllib.parse.parse_qs(url.query)
        record = TokenRequest(method, path, 0, None)
        status, doc = self._handle(method, url.path, query, headers, body, record)
        record.status = status
        self._record(record)
        return status, doc

    def _handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: Mapping[str, str],
        body: bytes,
        record: TokenRequest,
    ) -> tuple[int, dict[str, Any]]:
        if self.fail_status is not None:
            return self.fail_status, _error("UNAVAILABLE", "token server told to fail")
        if path != "/token":
            return 404, _error("NOT_FOUND", "no such endpoint")
        if method == "GET":
            record.scopes = [s for v in query.get("scope", []) for s in v.split(" ") if s]
            record.service = query.get("service", [None])[0]
            user: str | None = None
            auth = headers.get("authorization", "")
            if auth:
                scheme, _, value = auth.partition(" ")
                if scheme.lower() != "basic":
                    return 401, _error("UNAUTHORIZED", "only Basic credentials are accepted")
                name, _, password = base64.b64decode(value).decode(errors="replace").partition(":")
                if not self.check_password(name, password):
                    return 401, _error("UNAUTHORIZED", "bad credentials")
                user = name
            record.user = user
            access = self.grant_access(user, record.scopes)
            record.granted = access
            token = self.issue(user, access, audience=record.service)
            offline = query.get("offline_token", ["false"])[0] == "true"
            return 200, self._response(user, token, offline)
        if method == "POST":
            if not self.post:
                return 405, _error("UNSUPPORTED", "use GET")
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            record.grant_type = form.get("grant_type", [None])[0]
            record.scopes = [s for v in form.get("scope", []) for s in v.split(" ") if s]
            record.service = form.get("service", [None])[0]
            if record.grant_type == "password":
                name = form.get("username", [""])[0]
                if not self.check_password(name, form.get("password", [""])[0]):
                    return 401, _error("UNAUTHORIZED", "bad credentials")
                user = name
            elif record.grant_type == "refresh_token":
                with self._lock:
                    found = self._refresh.get(form.get("refresh_token", [""])[0])
                if found is None:
                    return 401, _error("UNAUTHORIZED", "unknown refresh token")
                user = found
            else:
                return 400, _error("UNSUPPORTED", f"grant_type {record.grant_type!r}")
            record.user = user
            access = self.grant_access(user, record.scopes)
            record.granted = access
            token = self.issue(user, access, audience=record.service)
            doc = self._response(user, token, form.get("access_type", [""])[0] == "offline")
            doc["scope"] = " ".join(record.scopes)
            if record.grant_type == "refresh_token":
                doc["refresh_token"] = form["refresh_token"][0]
            return 200, doc
        return 405, _error("UNSUPPORTED", f"method {method}")


def _error(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"code": code, "message": message}]}


def _handler_class(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, doc = server.handle(self.command, self.path, headers, body)
            data = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="crid-token-server"')
            self.end_headers()
            self.wfile.write(data)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
