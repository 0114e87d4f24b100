"""Registry auth: challenges, CRI credentials, the token cache."""

import base64

import pytest

from cri.errors import InvalidArgument
from cri.images.auth import Credentials, TokenCache, credentials_from_cri, parse_challenges


def test_bearer_challenge() -> None:
    (c,) = parse_challenges(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull",
    }


def test_several_challenges_and_quoting() -> None:
    cs = parse_challenges('Basic realm="a \\"b\\"", Bearer realm=https://t/x,error="invalid_token"')
    assert [c.scheme for c in cs] == ["basic", "bearer"]
    assert cs[0].params["realm"] == 'a "b"'
    assert cs[1].params == {"realm": "https://t/x", "error": "invalid_token"}


def test_cri_auth_field_decodes() -> None:
    creds = credentials_from_cri(auth=base64.b64encode(b"alice:s3cret:x").decode())
    assert (creds.username, creds.password) == ("alice", "s3cret:x")
    with pytest.raises(InvalidArgument):
        credentials_from_cri(auth="!!notbase64")
    with pytest.raises(InvalidArgument, match="user:password"):
        credentials_from_cri(auth=base64.b64encode(b"nocolon").decode())


def test_secrets_are_not_in_repr() -> None:
    creds = Credentials("alice", "s3cret", "idtok", "regtok")
    text = repr(creds)
    assert "alice" in text
    for secret in ("s3cret", "idtok", "regtok"):
        assert secret not in text
        assert secret not in creds.cache_key()
    assert Credentials().anonymous and not creds.anonymous


def test_token_cache_expires() -> None:
    cache = TokenCache()
    key = ("r", "s", "scope", "k")
    cache.put(key, "tok", 3600)
    assert cache.get(key) == "tok"
    cache.put(key, "short", 1)  # shorter than the safety margin: already stale
    assert cache.get(key) is None
