"""The loopback servers of tests/support that need no registry: the token
server (JWT shape, signature, key id, grants, OAuth2 POST), the down mirror,
and the registry's access-log parser."""

import base64
import hashlib
import json
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import certs
from tests.support.down_mirror import DownMirror
from tests.support.registry import parse_access_log
from tests.support.token_server import TokenServer, b64url_decode, decode_jwt, parse_scope


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory: pytest.TempPathFactory) -> certs.SigningKey:
    return certs.make_signing_key(tmp_path_factory.mktemp("key"))


@pytest.fixture
def tokens(tmp_path: Path, signing_key: certs.SigningKey) -> Iterator[TokenServer]:
    with TokenServer(tmp_path, users={"alice": "wonderland"}, signing_key=signing_key) as server:
        yield server


def get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    headers = {}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def post(url: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def verify_with_openssl(token: str, cert: Path, tmp_path: Path) -> bool:
    signing_input, _, sig = token.rpartition(".")
    (tmp_path / "msg").write_bytes(signing_input.encode())
    (tmp_path / "sig").write_bytes(b64url_decode(sig))
    pub = subprocess.run(["openssl", "x509", "-in", str(cert), "-pubkey", "-noout"], capture_output=True).stdout
    (tmp_path / "pub.pem").write_bytes(pub)
    args = ["-verify", str(tmp_path / "pub.pem"), "-signature", str(tmp_path / "sig"), str(tmp_path / "msg")]
    proc = subprocess.run(["openssl", "dgst", "-sha256", *args], capture_output=True)
    return proc.returncode == 0


def test_libtrust_key_id_format(signing_key: certs.SigningKey) -> None:
    kid = signing_key.key_id
    groups = kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    spki = certs.public_key_der(signing_key.cert)
    assert spki == certs.public_key_der(signing_key.key)
    raw = base64.b32decode("".join(groups))
    assert raw == hashlib.sha256(spki).digest()[:30]


def test_token_with_credentials(tokens: TokenServer, tmp_path: Path) -> None:
    status, doc = get(f"{tokens.realm}?service=svc&scope=repository:foo/bar:pull,push", ("alice", "wonderland"))
    assert status == 200
    assert doc["token"] == doc["access_token"] and doc["expires_in"] == 300 and doc["issued_at"].endswith("Z")
    header, claims = decode_jwt(doc["token"])
    assert header == {"typ": "JWT", "alg": "RS256", "kid": tokens.key_id}
    assert claims["iss"] == tokens.issuer and claims["sub"] == "alice" and claims["aud"] == "svc"
    assert claims["nbf"] <= claims["iat"] < claims["exp"] == claims["iat"] + 300
    assert claims["access"] == [{"type": "repository", "name": "foo/bar", "actions": ["pull", "push"]}]
    assert verify_with_openssl(doc["token"], tokens.cert_path, tmp_path)
    assert tokens.request_count == 1
    rec = tokens.requests[0]
    assert (rec.method, rec.status, rec.user, rec.scopes) == ("GET", 200, "alice", ["repository:foo/bar:pull,push"])


def test_token_refusals_and_anonymous(tokens: TokenServer) -> None:
    assert get(f"{tokens.realm}?scope=repository:a:pull", ("alice", "wrong"))[0] == 401
    assert get(f"{tokens.realm}?scope=repository:a:pull", ("mallory", "x"))[0] == 401
    status, doc = get(f"{tokens.realm}?scope=repository:a:pull")
    assert status == 200
    assert decode_jwt(doc["token"])[1]["access"] == [{"type": "repository", "name": "a", "actions": []}]
    tokens.anonymous_pull = True
    status, doc = get(f"{tokens.realm}?scope=repository:a:pull,push")
    assert decode_jwt(doc["token"])[1]["access"][0]["actions"] == ["pull"]
    assert decode_jwt(doc["token"])[1]["sub"] == ""
    assert [r.status for r in tokens.requests] == [401, 401, 200, 200]
    tokens.fail_status = 503
    assert get(tokens.realm)[0] == 503
    assert get(tokens.url + "/other")[0] == 503
    tokens.fail_status = None
    assert get(tokens.url + "/other")[0] == 404


def test_oauth2_post_and_refresh(tokens: TokenServer) -> None:
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "wonderland",
        "service": "svc",
        "scope": "repository:a:pull repository:b:pull",
        "client_id": "crid",
        "access_type": "offline",
    }
    status, doc = post(tokens.realm, form)
    assert status == 200 and doc["scope"] == "repository:a:pull repository:b:pull"
    assert [a["name"] for a in decode_jwt(doc["access_token"])[1]["access"]] == ["a", "b"]
    refresh = doc["refresh_token"]
    status, doc = post(tokens.realm, {"grant_type": "refresh_token", "refresh_token": refresh, "scope": "x:y:z"})
    assert status == 200 and decode_jwt(doc["access_token"])[1]["sub"] == "alice"
    assert post(tokens.realm, {"grant_type": "refresh_token", "refresh_token": "nope"})[0] == 401
    assert post(tokens.realm, {**form, "password": "bad"})[0] == 401
    tokens.post = False
    assert post(tokens.realm, form)[0] == 405
    assert [r.grant_type for r in tokens.requests] == ["password", "refresh_token", "refresh_token", "password", None]


def test_x5c_header_and_custom_grant(tmp_path: Path, signing_key: certs.SigningKey) -> None:
    def grant(user: str | None, kind: str, name: str, actions: list[str]) -> list[str]:
        return ["pull"] if name.startswith("public/") else []

    with TokenServer(tmp_path, header="x5c", grant=grant, signing_key=signing_key) as server:
        _, doc = get(f"{server.realm}?scope=repository:public/x:pull,push&scope=repository:private/y:pull")
        header, claims = decode_jwt(doc["token"])
        assert base64.b64decode(header["x5c"][0]) == signing_key.cert_der and "kid" not in header
        assert [a["actions"] for a in claims["access"]] == [["pull"], []]
        expired = server.issue("bob", [], expires_in=-3600)
        assert decode_jwt(expired)[1]["exp"] < decode_jwt(doc["token"])[1]["iat"]


def test_parse_scope() -> None:
    assert parse_scope("repository:library/busybox:pull,push") == ("repository", "library/busybox", ["pull", "push"])
    assert parse_scope("registry:catalog:*") == ("registry", "catalog", ["*"])
    assert parse_scope("bogus") is None


def test_rs256_matches_openssl(signing_key: certs.SigningKey, tmp_path: Path) -> None:
    msg = tmp_path / "m"
    msg.write_bytes(b"crid")
    ours = signing_key.rsa.sign_rs256(b"crid")
    theirs = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", str(signing_key.key), str(msg)], capture_output=True, check=True
    ).stdout
    assert ours == theirs  # PKCS#1 v1.5 is deterministic
    assert signing_key.rsa.verify_rs256(b"crid", ours) and not signing_key.rsa.verify_rs256(b"x", ours)


def test_down_mirror_modes() -> None:
    with DownMirror("refuse") as mirror, pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", mirror.port), timeout=2).close()
    with DownMirror("503") as mirror:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(mirror.url + "/v2/", timeout=5)
        assert err.value.code == 503
        assert mirror.requests == 1
    with DownMirror("hang") as mirror:
        with pytest.raises(TimeoutError):
            urllib.request.urlopen(mirror.url + "/v2/", timeout=0.5)
        assert mirror.requests == 1


def test_access_log_parser() -> None:
    text = (
        '127.0.0.1 - - [30/Nov/2026:08:13:23 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "Python-urllib/3.11"\n'
        "time=... level=info msg=noise\n"
        '127.0.0.1 - - [30/Nov/2026:08:13:23 +0000] "HEAD /v2/a/blobs/sha256:00?x=1 HTTP/1.1" 404 157 "" "crid/0.1"\n'
    )
    records = parse_access_log(text)
    assert [(r.method, r.path, r.status, r.size) for r in records] == [
        ("GET", "/v2/", 200, 2),
        ("HEAD", "/v2/a/blobs/sha256:00", 404, 157),
    ]
    assert records[1].uri.endswith("?x=1") and records[1].user_agent == "crid/0.1"
