"""hosts.toml in containerd's format."""

from pathlib import Path

import pytest

from cri.errors import FailedPrecondition
from cri.images.hosts import load_hosts


def _write(root: Path, host: str, text: str) -> Path:
    d = root / host
    d.mkdir(parents=True)
    (d / "hosts.toml").write_text(text)
    return d


def test_defaults_without_config(tmp_path: Path) -> None:
    assert [h.base for h in load_hosts(str(tmp_path), "docker.io")] == ["https://registry-1.docker.io/v2"]
    assert [h.base for h in load_hosts(str(tmp_path), "quay.io")] == ["https://quay.io/v2"]
    # containerd's CRI talks plain HTTP to registries on loopback
    assert [h.base for h in load_hosts(str(tmp_path), "localhost:5000")] == ["http://localhost:5000/v2"]
    assert [h.base for h in load_hosts(str(tmp_path), "127.0.0.1:5000")] == ["http://127.0.0.1:5000/v2"]


def test_mirrors_then_server(tmp_path: Path) -> None:
    d = _write(
        tmp_path,
        "docker.io",
        """
server = "https://registry-1.docker.io"
[host."https://mirror-a:5000"]
  capabilities = ["pull", "resolve"]
  ca = "ca.pem"
  skip_verify = true
[host."http://mirror-b/prefix"]
  capabilities = ["pull"]
  override_path = true
  [host."http://mirror-b/prefix".header]
    x-tenant = "t1"
[host."mirror-c"]
  client = [["c.pem", "c.key"]]
""",
    )
    hosts = load_hosts(str(tmp_path), "docker.io")
    assert [h.base for h in hosts] == [
        "https://mirror-a:5000/v2",
        "http://mirror-b/prefix",
        "https://mirror-c/v2",
        "https://registry-1.docker.io/v2",
    ]
    assert hosts[0].ca == (str(d / "ca.pem"),) and hosts[0].skip_verify
    assert hosts[1].capabilities == {"pull"} and hosts[1].headers == (("x-tenant", "t1"),)
    assert hosts[2].client == ((str(d / "c.pem"), str(d / "c.key")),)
    assert hosts[3].capabilities == {"pull", "resolve", "push"}


def test_path_gets_v2_unless_overridden(tmp_path: Path) -> None:
    _write(tmp_path, "r.example", 'server = "https://r.example/sub"\n')
    assert [h.base for h in load_hosts(str(tmp_path), "r.example")] == ["https://r.example/sub/v2"]


def test_host_with_port_dir_and_default_dir(tmp_path: Path) -> None:
    _write(tmp_path, "127.0.0.1:5000", 'server = "https://127.0.0.1:5000"\nca = "/x/ca.pem"\n')
    _write(tmp_path, "_default", 'server = "https://fallback.example"\n')
    assert [h.base for h in load_hosts(str(tmp_path), "127.0.0.1:5000")] == ["https://127.0.0.1:5000/v2"]
    assert load_hosts(str(tmp_path), "127.0.0.1:5000")[0].ca == ("/x/ca.pem",)
    assert [h.base for h in load_hosts(str(tmp_path), "quay.io")] == ["https://fallback.example/v2"]


def test_mirrors_without_server_fall_back_to_the_registry(tmp_path: Path) -> None:
    _write(tmp_path, "quay.io", '[host."https://mirror"]\ncapabilities = ["pull", "resolve"]\n')
    assert [h.base for h in load_hosts(str(tmp_path), "quay.io")] == ["https://mirror/v2", "https://quay.io/v2"]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("serve = 'x'", "unknown key"),
        ("[host.'https://m']\ncapability = ['pull']", "unknown key"),
        ("[host.'https://m']\ncapabilities = ['fly']", "unknown capabilities"),
        ("[host.'ftp://m']\n", "must be http"),
        ("[host.'https://m']\nskip_verify = 'yes'", "skip_verify"),
        ("server = 3", "server must be"),
        ("[host", "Expected"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, reason: str) -> None:
    _write(tmp_path, "r.example", text)
    with pytest.raises(FailedPrecondition, match=reason):
        load_hosts(str(tmp_path), "r.example")


def test_tls_contexts_are_shared_and_follow_their_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts are read for every pull; the system's CAs (50 ms, 2 MiB) are not loaded for each."""
    import ssl

    from cri.images import hosts as hostsmod
    from tests.support.certs import make_ca, make_client_cert

    ca = make_ca(tmp_path / "ca")
    client = make_client_cert(tmp_path / "client", ca)
    made: list[ssl.SSLContext] = []
    real = ssl.create_default_context

    def counted() -> ssl.SSLContext:
        made.append(real())
        return made[-1]

    monkeypatch.setattr(ssl, "create_default_context", counted)
    hostsmod._tls_context.cache_clear()

    def host(**tls: object) -> hostsmod.RegistryHost:
        return hostsmod.RegistryHost("https", "r.example", **tls)  # type: ignore[arg-type]

    assert hostsmod.RegistryHost("http", "r.example").ssl_context() is None
    assert host().ssl_context() is True  # the HTTP client's one context of the system's CAs
    assert made == []
    with_ca = host(ca=(str(ca.cert),)).ssl_context()
    assert isinstance(with_ca, ssl.SSLContext) and with_ca.verify_mode == ssl.CERT_REQUIRED
    assert host(ca=(str(ca.cert),)).ssl_context() is with_ca and len(made) == 1  # the next pull's hosts
    mtls = host(ca=(str(ca.cert),), client=((str(client.cert), str(client.key)),)).ssl_context()
    assert mtls is not with_ca and len(made) == 2
    insecure = host(skip_verify=True).ssl_context()
    assert isinstance(insecure, ssl.SSLContext) and insecure.verify_mode == ssl.CERT_NONE
    assert not insecure.check_hostname

    # a CA file rotated in place is loaded again
    other = make_ca(tmp_path / "other", cn="another CA")
    ca.cert.write_bytes(other.cert.read_bytes() + b"\n")
    rotated = host(ca=(str(ca.cert),)).ssl_context()
    assert rotated is not with_ca and len(made) == 4
    # a missing file is an error each time, not a cached context
    for _ in range(2):
        with pytest.raises(OSError):
            host(ca=(str(tmp_path / "missing.pem"),)).ssl_context()
