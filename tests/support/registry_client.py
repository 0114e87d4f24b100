"""The tests' Distribution v2 client: push built images and read them back.

Synchronous (urllib) and small, for test setup and checks: monolithic blob
uploads, manifest PUT/GET/DELETE, tag lists, with Basic or Bearer auth
(tokens cached by scope). crid's own client is :mod:`cri.images.registry`;
the registry these talk to is :mod:`tests.support.registry`; the images come
from :mod:`tests.support.oci_build`.
"""

import base64
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from tests.support.oci_build import MANIFEST_ACCEPT, Index, Target, iter_blobs, sha256_digest


class RegistryError(Exception):
    def __init__(self, method: str, url: str, status: int, body: bytes) -> None:
        super().__init__(f"{method} {url}: HTTP {status}: {body[:500].decode(errors='replace')}")
        self.status = status
        self.body = body


_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ("bearer", {realm:..., service:...})."""
    scheme, _, rest = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(rest))


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class RegistryClient:
    """A minimal Distribution v2 client: enough to push and to read back.

    ``auth`` is (user, password), used for Basic challenges and sent to a
    token realm for Bearer challenges; tokens are cached by scope.
    """

    def __init__(
        self,
        url: str,
        *,
        auth: tuple[str, str] | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.auth = auth
        self.ssl_context = ssl_context
        self.timeout = timeout
        self._authorization: str | None = None
        self._tokens: dict[str, str] = {}

    def _raw(self, method: str, url: str, body: bytes | None, headers: Mapping[str, str]) -> Response:
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.ssl_context) as resp:
                return Response(resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read())
        except urllib.error.HTTPError as err:
            data = err.read() if err.fp is not None else b""
            return Response(err.code, {k.lower(): v for k, v in err.headers.items()}, data)

    def _basic(self) -> str:
        assert self.auth is not None
        return "Basic " + base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()

    def fetch_token(self, realm: str, service: str | None, scope: str | None) -> str:
        query = []
        if service:
            query.append(("service", service))
        if scope:
            query += [("scope", s) for s in scope.split(" ")]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        headers = {"Authorization": self._basic()} if self.auth else {}
        resp = self._raw("GET", url, None, headers)
        if resp.status != 200:
            raise RegistryError("GET", url, resp.status, resp.body)
        doc = json.loads(resp.body)
        token = doc.get("token") or doc.get("access_token")
        if not isinstance(token, str):
            raise RegistryError("GET", url, resp.status, resp.body)
        return token

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None
    ) -> Response:
        """``path`` is relative to the registry URL or absolute; answers a 401 once."""
        url = path if "://" in path else self.url + path
        hdrs = dict(headers or {})
        if self._authorization:
            hdrs["Authorization"] = self._authorization
        resp = self._raw(method, url, body, hdrs)
        if resp.status != 401:
            return resp
        scheme, params = parse_challenge(resp.headers.get("www-authenticate", ""))
        if scheme == "basic" and self.auth:
            self._authorization = self._basic()
        elif scheme == "bearer":
            scope = params.get("scope", "")
            token = self._tokens.get(scope)
            if token is None or f"Bearer {token}" == hdrs.get("Authorization"):
                token = self.fetch_token(params["realm"], params.get("service"), scope or None)
                self._tokens[scope] = token
            self._authorization = f"Bearer {token}"
        else:
            return resp
        hdrs["Authorization"] = self._authorization
        return self._raw(method, url, body, hdrs)

    def _check(self, method: str, path: str, resp: Response, *ok: int) -> Response:
        if resp.status not in ok:
            raise RegistryError(method, path, resp.status, resp.body)
        return resp

    def blob_exists(self, repo: str, digest: str) -> bool:
        return self.request("HEAD", f"/v2/{repo}/blobs/{digest}").status == 200

    def push_blob(self, repo: str, digest: str, data: bytes) -> None:
        """Monolithic upload (POST then PUT ?digest=), skipped when HEAD finds the blob."""
        if self.blob_exists(repo, digest):
            return
        path = f"/v2/{repo}/blobs/uploads/"
        resp = self._check("POST", path, self.request("POST", path, b"", {"Content-Length": "0"}), 202)
        location = resp.headers["location"]
        if "://" not in location:
            location = self.url + location
        sep = "&" if "?" in location else "?"
        put_url = f"{location}{sep}digest={urllib.parse.quote(digest)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(data))}
        self._check("PUT", put_url, self.request("PUT", put_url, data, headers), 201)

    def push_manifest(self, repo: str, ref: str, data: bytes, media_type: str) -> str:
        path = f"/v2/{repo}/manifests/{ref}"
        resp = self._check("PUT", path, self.request("PUT", path, data, {"Content-Type": media_type}), 201)
        return resp.headers.get("docker-content-digest", sha256_digest(data))

    def push(self, repo: str, ref: str | None, target: Target) -> str:
        """Blobs, then child manifests by digest, then ``target`` under ``ref``
        (its digest when None). Returns the manifest digest."""
        for digest, data in iter_blobs(target):
            self.push_blob(repo, digest, data)
        if isinstance(target, Index):
            for image in target.manifests:
                self.push_manifest(repo, image.digest, image.manifest_bytes, image.media_type)
        digest = self.push_manifest(repo, ref or target.digest, target.manifest_bytes, target.media_type)
        if digest != target.digest:
            raise RuntimeError(f"registry says {digest}, built {target.digest}")
        return digest

    def get_manifest(self, repo: str, ref: str, accept: str = MANIFEST_ACCEPT) -> Response:
        path = f"/v2/{repo}/manifests/{ref}"
        return self._check("GET", path, self.request("GET", path, None, {"Accept": accept}), 200)

    def get_blob(self, repo: str, digest: str) -> bytes:
        path = f"/v2/{repo}/blobs/{digest}"
        return self._check("GET", path, self.request("GET", path), 200).body

    def delete_manifest(self, repo: str, digest: str) -> None:
        path = f"/v2/{repo}/manifests/{digest}"
        self._check("DELETE", path, self.request("DELETE", path), 202)

    def tags(self, repo: str) -> list[str]:
        path = f"/v2/{repo}/tags/list"
        doc = json.loads(self._check("GET", path, self.request("GET", path), 200).body)
        return list(doc.get("tags") or [])


def push(
    registry_url: str,
    repo: str,
    ref: str | None,
    target: Target,
    *,
    auth: tuple[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> str:
    """Push an image or an index to ``registry_url`` (``http(s)://host:port``) as
    ``repo:ref`` (by digest when ``ref`` is None); returns the manifest digest."""
    return RegistryClient(registry_url, auth=auth, ssl_context=ssl_context).push(repo, ref, target)
