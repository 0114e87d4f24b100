"""The tests' registry client, without a registry."""

from tests.support.registry_client import parse_challenge


def test_challenge_parsing() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "http://127.0.0.1:1/token", "service": "reg", "scope": "repository:a/b:pull,push"}
