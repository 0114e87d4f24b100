"""The Docker Distribution v2 API, read side: manifests and blobs.

A ``Repository`` is one repository on one registry, reached through its
configured hosts (mirrors first), with authentication, retries with backoff
on 5xx/429 and connection errors, redirects that never carry the registry's
credentials to another host, and resumable blob downloads (HTTP Range).
"""

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from cri.errors import CridError, FailedPrecondition, NotFound, PermissionDenied, Unavailable
from cri.images.auth import DEFAULT_TOKEN_SECONDS, Challenge, Credentials, TokenCache, parse_challenges
from cri.images.content import BlobSink
from cri.images.hosts import RegistryHost
from cri.images.http import HttpError, Response, Session
from cri.log import fields

log = logging.getLogger(__name__)

MANIFEST_MAX_BYTES = 4 * 1024 * 1024
TOKEN_MAX_BYTES = 1024 * 1024
CHUNK_BYTES = 1024 * 1024
MAX_REDIRECTS = 5
RETRIES = 3
BACKOFF_SECONDS = (0.2, 0.5, 1.5)
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})


class _Retryable(Exception):
    """A failure worth trying again (5xx, connection trouble)."""


async def read_body(resp: Response, limit: int, what: str, size: int | None = None) -> bytes:
    """The whole body, refused past ``limit`` bytes and, with ``size``, unless
    it is exactly that long, read to its end."""
    length = resp.content_length
    if length is not None and length > limit:
        raise FailedPrecondition(f"{what} is {length} bytes, over the {limit} byte limit")
    if size is not None and length is not None and length != size:
        raise FailedPrecondition(f"{what}: size mismatch: {length} bytes announced, {size} in its descriptor")
    buf = bytearray()
    async for chunk in resp.iter_any():
        buf += chunk
        if len(buf) > limit:
            raise FailedPrecondition(f"{what} is over the {limit} byte limit")
    if length is not None and len(buf) < length:
        raise _Retryable(f"{what} ended after {len(buf)} of {length} bytes")
    if size is not None and len(buf) != size:
        raise FailedPrecondition(f"{what}: size mismatch: got {len(buf)} bytes, expected {size}")
    return bytes(buf)


@dataclass(frozen=True)
class Fetched:
    body: bytes
    media_type: str
    host: RegistryHost


def _same_origin(a: str, b: str) -> bool:
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc) == (pb.scheme, pb.netloc)


def new_session(read_timeout: float) -> Session:
    """The HTTP client of registry requests (cri/images/http.py): no proxy from the environment,
    bodies as sent, ``read_timeout`` seconds at most between two reads."""
    return Session(read_timeout)


class Repository:
    def __init__(
        self,
        session: Session,
        hosts: list[RegistryHost],
        registry: str,
        path: str,
        credentials: Credentials,
        tokens: TokenCache,
    ) -> None:
        self.session = session
        self.hosts = hosts
        self.registry = registry
        self.path = path
        self.credentials = credentials
        self.tokens = tokens
        self._auth: dict[str, str] = {}  # netloc -> Authorization header that worked

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization headers that worked, by host: a layer's own process starts with them."""
        return dict(self._auth)

    def trust(self, auth: dict[str, str]) -> None:
        self._auth.update(auth)

    # --- HTTP plumbing ---------------------------------------------------

    async def _send(self, host: RegistryHost, method: str, url: str, headers: dict[str, str]) -> Response:
        """One request, following redirects by hand so that credentials never
        go to another origin."""
        origin = url
        ssl_ctx: Any = host.ssl_context() if host.scheme == "https" else None
        for _ in range(MAX_REDIRECTS + 1):
            resp = await self.session.request(method, url, headers, ssl=ssl_ctx)
            if resp.status not in _REDIRECT_STATUS or "Location" not in resp.headers:
                return resp
            url = urljoin(url, resp.headers["Location"])
            resp.release()
            if not _same_origin(origin, url):
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
                ssl_ctx = None if url.startswith("http:") else True
        raise Unavailable(f"{self.registry}: too many redirects for {origin}")

    async def _request(
        self,
        host: RegistryHost,
        method: str,
        suffix: str,
        headers: dict[str, str] | Callable[[], dict[str, str]] | None = None,
        ok: Callable[[Response], Awaitable[Any]] | None = None,
    ) -> Any:
        """Send with auth and retries. ``ok`` consumes a successful response
        (inside the retry loop, so a body that breaks off is retried too)."""
        url = host.url(suffix)
        authorized = False
        attempt = 0
        while True:
            hdrs = dict(host.headers)
            hdrs.update((headers() if callable(headers) else headers) or {})
            if host.netloc in self._auth:
                hdrs["Authorization"] = self._auth[host.netloc]
            try:
                resp = await self._send(host, method, url, hdrs)
                try:
                    if resp.status == 401 and not authorized:
                        authorized = True
                        await self._authorize(host, resp.headers.get("WWW-Authenticate", ""))
                        continue
                    if resp.status in _RETRY_STATUS:
                        raise _Retryable(f"HTTP {resp.status} from {host.netloc}")
                    self._check_status(resp, host, suffix)
                    return await ok(resp) if ok is not None else resp
                finally:
                    resp.release()
            except (TimeoutError, _Retryable, HttpError, ConnectionError) as exc:
                if attempt >= RETRIES:
                    reason = str(exc) or type(exc).__name__
                    raise Unavailable(f"{host.netloc}: {method} {suffix} failed: {reason}") from None
                delay = BACKOFF_SECONDS[min(attempt, len(BACKOFF_SECONDS) - 1)]
                attempt += 1
                log.debug(
                    "registry retry",
                    extra=fields(host=host.netloc, path=suffix, attempt=attempt, error=str(exc)),
                )
                await asyncio.sleep(delay * (0.75 + random.random() / 2))

    def _check_status(self, resp: Response, host: RegistryHost, suffix: str) -> None:
        if resp.status < 300:
            return
        what = f"{self.registry}/{self.path}"
        if resp.status == 404:
            raise NotFound(f"{what}: {suffix.rsplit('/', 1)[-1]} not found on {host.netloc}")
        if resp.status in (401, 403):
            who = "anonymous access" if self.credentials.anonymous else "the given credentials"
            raise PermissionDenied(f"{what}: {host.netloc} refused {who} (HTTP {resp.status})")
        raise FailedPrecondition(f"{what}: unexpected HTTP {resp.status} from {host.netloc} for {suffix}")

    # --- authentication --------------------------------------------------

    async def _authorize(self, host: RegistryHost, header: str) -> None:
        creds = self.credentials
        challenges = {c.scheme: c for c in parse_challenges(header)}
        if creds.registry_token:
            self._auth[host.netloc] = f"Bearer {creds.registry_token}"
        elif "bearer" in challenges:
            token = await self._token(host, challenges["bearer"])
            self._auth[host.netloc] = f"Bearer {token}"
        elif "basic" in challenges and creds.username:
            self._auth[host.netloc] = creds.basic_header()
        else:
            raise PermissionDenied(
                f"{self.registry}/{self.path}: {host.netloc} requires authentication and no usable "
                "credentials were given"
            )

    async def _token(self, host: RegistryHost, challenge: Challenge) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("http://", "https://")):
            raise PermissionDenied(f"{host.netloc}: bearer challenge without a usable realm")
        service = challenge.params.get("service", "")
        scope = challenge.params.get("scope") or f"repository:{self.path}:pull"
        creds = self.credentials
        key = (realm, service, scope, creds.cache_key())
        cached = self.tokens.get(key)
        if cached:
            return cached
        ssl_ctx: Any = host.ssl_context() if realm.startswith("https:") and _same_origin(realm, host.base) else None
        if realm.startswith("https:") and ssl_ctx is None:
            ssl_ctx = True
        query = {"service": service, "scope": scope} if service else {"scope": scope}
        try:
            if creds.identity_token:  # OAuth2 refresh-token grant, as docker and containerd do
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "client_id": "crid",
                    **query,
                }
                form_type = {"Content-Type": "application/x-www-form-urlencoded"}
                resp = await self.session.request("POST", realm, form_type, urlencode(form).encode(), ssl=ssl_ctx)
            else:
                headers = {} if creds.anonymous else {"Authorization": creds.basic_header()}
                resp = await self.session.get(f"{realm}?{urlencode(query)}", headers=headers, ssl=ssl_ctx)
            async with resp:
                if resp.status in (401, 403):
                    raise PermissionDenied(
                        f"{host.netloc}: token server {urlsplit(realm).netloc} refused the credentials "
                        f"for {scope} (HTTP {resp.status})"
                    )
                if resp.status != 200:
                    raise Unavailable(f"token server {urlsplit(realm).netloc} answered HTTP {resp.status}")
                data = json.loads(await read_body(resp, TOKEN_MAX_BYTES, "token response"))
        except (TimeoutError, _Retryable, HttpError, ConnectionError, ValueError) as exc:
            raise Unavailable(f"token server {urlsplit(realm).netloc}: {type(exc).__name__}: {exc}") from None
        token = (data.get("token") or data.get("access_token")) if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"token server {urlsplit(realm).netloc} sent no token")
        lifetime = data.get("expires_in", DEFAULT_TOKEN_SECONDS)
        self.tokens.put(key, token, float(lifetime) if isinstance(lifetime, int | float) else 60.0)
        return token

    # --- the API ---------------------------------------------------------

    def _hosts_for(self, capability: str) -> list[RegistryHost]:
        hosts = [h for h in self.hosts if capability in h.capabilities]
        if not hosts:
            raise FailedPrecondition(f"{self.registry}: no configured host has the {capability!r} capability")
        return hosts

    async def _each_host(self, capability: str, op: Callable[[RegistryHost], Awaitable[Any]]) -> Any:
        """Run ``op`` on each host in order until one succeeds.

        Only a host that cannot answer (connection trouble, 5xx), does not
        have the object (404) or refuses anonymous access sends the pull on to
        the next host, as containerd does. Any other answer is definitive: a
        refusal of the given credentials, a size over the limit, a digest
        mismatch. When every host fails, a 404 or refusal outranks a
        connection failure, so the operator sees why, not the last dead host.
        """
        failures: list[CridError] = []
        for host in self._hosts_for(capability):
            try:
                return await op(host)
            except (NotFound, Unavailable, PermissionDenied) as exc:
                if isinstance(exc, PermissionDenied) and not self.credentials.anonymous:
                    raise
                failures.append(exc)
                log.info("registry host failed", extra=fields(host=host.netloc, error=str(exc)))
        answers = [f for f in failures if not isinstance(f, Unavailable)]
        if answers:
            raise answers[0]
        if len(failures) == 1:
            raise failures[0]
        raise Unavailable("; ".join(str(f) for f in failures))

    async def manifest(self, obj: str, accept: str, resolve: bool, size: int | None = None) -> Fetched:
        """GET a manifest by tag (``resolve``) or digest; size-capped, and
        exactly ``size`` bytes when its descriptor is known."""

        async def op(host: RegistryHost) -> Fetched:
            async def read(resp: Response) -> Fetched:
                body = await read_body(resp, MANIFEST_MAX_BYTES, f"manifest {obj}", size)
                media_type = resp.headers.get("Content-Type").split(";")[0].strip()
                return Fetched(body, media_type, host)

            fetched: Fetched = await self._request(
                host, "GET", f"/{self.path}/manifests/{obj}", {"Accept": accept}, ok=read
            )
            return fetched

        result: Fetched = await self._each_host("resolve" if resolve else "pull", op)
        return result

    async def blob_bytes(self, digest: str, size: int, limit: int) -> bytes:
        """A small blob (an image config) in memory, exactly ``size`` bytes."""

        async def op(host: RegistryHost) -> bytes:
            async def read(resp: Response) -> bytes:
                return await read_body(resp, limit, f"blob {digest}", size)

            return bytes(await self._request(host, "GET", f"/{self.path}/blobs/{digest}", ok=read))

        data: bytes = await self._each_host("pull", op)
        return data

    async def blob(self, digest: str, size: int, sink: BlobSink, progress: Callable[[int], None]) -> None:
        """Stream a blob into ``sink``; resumes with Range after a broken read."""

        async def op(host: RegistryHost) -> None:
            async def read(resp: Response) -> None:
                if sink.offset and resp.status != 206:
                    await sink.reset()  # the server ignored Range: start over
                chunks: list[bytes] = []  # joined once per CHUNK_BYTES: one copy on the event loop
                pending = 0
                try:
                    async for chunk in resp.iter_any():
                        chunks.append(chunk)
                        pending += len(chunk)
                        progress(len(chunk))
                        if sink.offset + pending > size:
                            raise FailedPrecondition(
                                f"blob {digest} is larger than its descriptor says ({size} bytes): digest mismatch"
                            )
                        if pending >= CHUNK_BYTES:
                            data, chunks, pending = b"".join(chunks), [], 0
                            await sink.write(data)
                finally:
                    if chunks:  # what arrived before a break is kept: the retry resumes after it
                        await sink.write(b"".join(chunks))
                if sink.offset < size:
                    raise _Retryable(f"blob {digest} ended after {sink.offset} of {size} bytes")

            async def range_read(resp: Response) -> None:
                try:
                    await read(resp)
                except HttpError as exc:
                    raise _Retryable(f"blob {digest} broke off: {exc}") from None

            def headers() -> dict[str, str]:  # computed per attempt: resume where the last one broke
                return {"Range": f"bytes={sink.offset}-"} if sink.offset else {}

            await self._request(host, "GET", f"/{self.path}/blobs/{digest}", headers, ok=range_read)

        await self._each_host("pull", op)
