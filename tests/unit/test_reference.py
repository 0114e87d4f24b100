"""Image references are normalised as docker and containerd do."""

import pytest

from cri.errors import InvalidArgument
from cri.images.reference import parse

D = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("user/app:v1", "docker.io/user/app:v1"),
        ("localhost/app", "localhost/app:latest"),
        ("localhost:5000/a/b/c:t", "localhost:5000/a/b/c:t"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
        ("registry.k8s.io/pause:3.9", "registry.k8s.io/pause:3.9"),
        (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
        (f"busybox:1.36@{D}", f"docker.io/library/busybox:1.36@{D}"),
        ("[::1]:5000/app:x", "[::1]:5000/app:x"),
        ("a.b/c__d/e-f.g:T_1.2-x", "a.b/c__d/e-f.g:T_1.2-x"),
    ],
)
def test_normalises(text: str, expected: str) -> None:
    assert str(parse(text)) == expected


def test_parts() -> None:
    r = parse(f"localhost:5000/x/y:t@{D}")
    assert (r.domain, r.path, r.tag, r.digest) == ("localhost:5000", "x/y", "t", D)
    assert r.name == "localhost:5000/x/y"
    assert r.object == D
    assert r.with_digest(D) == f"localhost:5000/x/y@{D}"
    assert parse("busybox").object == "latest"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Busybox", "lowercase"),
        ("docker.io/Library/busybox", "lowercase"),
        ("busybox:", "invalid tag"),
        ("busybox:-x", "invalid tag"),
        ("busybox@sha256:abc", "unsupported digest"),
        ("busybox@md5:" + "a" * 32, "unsupported digest"),
        ("busybox@", "invalid digest"),
        ("a" * 64, "image id"),
        ("bad host!/x", "invalid"),
        ("x//y", "invalid repository name"),
        ("x/" + "a" * 300, "longer than"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument, match=reason):
        parse(text)
