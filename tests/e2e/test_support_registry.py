"""The real registry fixture in each of its modes: HTTP, TLS (with and without
client certificates), Basic and token auth. Each test pushes images built by
tests/support/oci_build and reads them back with plain urllib, doing any auth
dance by hand, so that the fixtures are proven independently of crid."""

import base64
import hashlib
import io
import json
import os
import ssl
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Literal

import psutil
import pytest

from tests.support import oci_build as ob
from tests.support.registry import Registry
from tests.support.registry_client import RegistryError, parse_challenge
from tests.support.token_server import TokenServer, decode_jwt


@pytest.fixture
def workdir(e2e_base: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix="reg", dir=e2e_base))


@pytest.fixture(scope="module")
def image() -> ob.Image:
    """busybox (gzip) + a zstd layer + an uncompressed layer."""
    return ob.Image(
        [
            ob.busybox_layer("gzip"),
            ob.Layer([ob.Dir("etc"), ob.File("etc/zstd-layer", b"zstd\n")], "zstd"),
            ob.Layer([ob.File("plain-layer", b"plain\n"), ob.Whiteout("etc/hostname")], "none"),
        ],
        ob.ImageConfig(cmd=["sh", "-c", "echo hi"]),
    )


class Fetcher:
    """Plain urllib GETs, with an Authorization header when given."""

    def __init__(self, base: str, ctx: ssl.SSLContext | None = None, authorization: str | None = None) -> None:
        self.base, self.ctx, self.authorization = base, ctx, authorization

    def get(self, path: str, accept: str | None = None) -> tuple[int, dict[str, str], bytes]:
        headers = {"Accept": accept} if accept else {}
        if self.authorization:
            headers["Authorization"] = self.authorization
        req = urllib.request.Request(self.base + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.ctx) as resp:
                return resp.status, dict(resp.headers.items()), resp.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers.items()), err.read()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def check_round_trip(fetch: Fetcher, repo: str, ref: str, target: ob.Image | ob.Index) -> None:
    """The manifest under ``ref`` and every blob come back byte for byte."""
    status, headers, body = fetch.get(f"/v2/{repo}/manifests/{ref}", ob.MANIFEST_ACCEPT)
    assert status == 200, body
    assert body == target.manifest_bytes
    assert headers["Docker-Content-Digest"] == target.digest
    assert headers["Content-Type"] == target.media_type
    for digest, data in ob.iter_blobs(target):
        status, _, blob = fetch.get(f"/v2/{repo}/blobs/{digest}")
        assert status == 200
        assert blob == data and "sha256:" + hashlib.sha256(blob).hexdigest() == digest


def assert_gone(pid: int | None) -> None:
    assert pid is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_http_mode(workdir: Path, image: ob.Image) -> None:
    reg = Registry(workdir).start()
    pid = reg.pid
    try:
        assert reg.url.startswith("http://127.0.0.1:")
        assert reg.push("library/busybox", "latest", image) == image.digest
        index = ob.multiarch_index(attestation=True)
        assert reg.push("multi", "v1", index) == index.digest
        docker = ob.multiarch_index(docker=True)
        reg.push("multi-docker", "v1", docker)
        reg.push("bydigest", None, image)
        reg.reset_requests()

        fetch = Fetcher(reg.url)
        check_round_trip(fetch, "library/busybox", "latest", image)
        check_round_trip(fetch, "library/busybox", image.digest, image)
        check_round_trip(fetch, "multi", "v1", index)
        check_round_trip(fetch, "multi", index.manifests[1].digest, index.manifests[1])
        check_round_trip(fetch, "multi-docker", "v1", docker)
        assert fetch.get(f"/v2/bydigest/manifests/{image.digest}", ob.OCI_MANIFEST)[0] == 200
        # distribution 2.8 hides OCI manifests from clients that do not accept them
        assert fetch.get(f"/v2/bydigest/manifests/{image.digest}")[0] == 404
        for layer in image.layers:
            assert reg.blob_downloads(layer.digest, "library/busybox") == 2  # by tag and by digest above
        assert reg.blob_downloads(image.layers[1].digest) == 2
        assert reg.blob_downloads(image.layers[0].digest) == 4  # busybox is in both indexes too
        assert reg.manifest_gets("latest") == 1
        assert reg.count("GET", r"/manifests/") == 7
        assert reg.count(status=404) == 1
        assert fetch.get("/v2/library/busybox/manifests/missing")[0] == 404
        assert reg.count(status=404) == 2
        reg.reset_requests()
        assert reg.requests() == []
    finally:
        reg.stop()
    assert_gone(pid)
    assert not reg.running


def test_tls_mode(workdir: Path, image: ob.Image) -> None:
    with Registry(workdir, tls=True) as reg:
        assert reg.url.startswith("https://") and reg.ca_path is not None and reg.ca_path.is_file()
        reg.push("busybox", "1", image)
        ctx = ssl.create_default_context(cafile=str(reg.ca_path))
        check_round_trip(Fetcher(reg.url, ctx), "busybox", "1", image)
        check_round_trip(Fetcher(f"https://localhost:{reg.port}", ctx), "busybox", "1", image)
        with pytest.raises(urllib.error.URLError) as err:
            Fetcher(reg.url, ssl.create_default_context()).get("/v2/")
        assert isinstance(err.value.reason, ssl.SSLCertVerificationError)
        status, _, _ = Fetcher(f"http://{reg.host}").get("/v2/")
        assert status == 400  # plain HTTP to a TLS port
        pid = reg.pid
    assert_gone(pid)


def test_tls_client_certificates(workdir: Path, image: ob.Image) -> None:
    with Registry(workdir, client_auth=True) as reg:
        assert reg.client_cert is not None
        reg.push("busybox", "1", image)
        check_round_trip(Fetcher(reg.url, reg.ssl_context()), "busybox", "1", image)
        no_cert = reg.ssl_context(client_cert=False)
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            Fetcher(reg.url, no_cert).get("/v2/")
        assert 'client = [["' in reg.hosts_toml("registry.k8s.io")


def test_basic_auth_mode(workdir: Path, image: ob.Image) -> None:
    users = {"alice": "wonderland", "bob": "builder"}
    with Registry(workdir, auth="basic", users=users) as reg:
        assert reg.credentials == ("alice", "wonderland")
        with pytest.raises(RegistryError) as err:
            reg.push("busybox", "1", image, auth=None)
        assert err.value.status == 401
        reg.push("busybox", "1", image, auth=("bob", "builder"))

        status, headers, _ = Fetcher(reg.url).get("/v2/busybox/manifests/1")
        assert status == 401
        assert headers["Www-Authenticate"].startswith('Basic realm="crid-test-registry"')
        assert Fetcher(reg.url, authorization=basic("alice", "wrong")).get("/v2/")[0] == 401
        check_round_trip(Fetcher(reg.url, authorization=basic("alice", "wonderland")), "busybox", "1", image)


def token_dance(reg: Registry, repo: str, auth: tuple[str, str] | None) -> tuple[int, str]:
    """GET a manifest anonymously, follow the Bearer challenge to the realm by hand;
    returns the token server's status and the token (or "")."""
    status, headers, _ = Fetcher(reg.url, reg.ssl_context()).get(f"/v2/{repo}/manifests/1")
    assert status == 401
    scheme, params = parse_challenge(headers["Www-Authenticate"])
    assert scheme == "bearer"
    assert reg.token_server is not None
    assert params["realm"] == reg.token_server.realm and params["service"] == reg.token_server.service
    assert params["scope"] == f"repository:{repo}:pull"
    query = urllib.parse.urlencode({"service": params["service"], "scope": params["scope"]})
    req = urllib.request.Request(f"{params['realm']}?{query}")
    if auth:
        req.add_header("Authorization", basic(*auth))
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())["token"]
    except urllib.error.HTTPError as err:
        return err.code, ""


@pytest.mark.parametrize("header", ["kid", "x5c"])
def test_token_auth_mode(workdir: Path, image: ob.Image, header: Literal["kid", "x5c"]) -> None:
    users = {"alice": "wonderland"}
    with Registry(workdir, auth="token", users=users, token_header=header) as reg:
        tokens = reg.token_server
        assert tokens is not None and tokens.running
        reg.push("team/busybox", "1", image)
        assert tokens.request_count >= 1
        assert all(r.user == "alice" for r in tokens.requests)
        tokens.reset()

        status, token = token_dance(reg, "team/busybox", ("alice", "wonderland"))
        assert status == 200
        jwt_header, claims = decode_jwt(token)
        assert (header in jwt_header) and claims["sub"] == "alice"
        check_round_trip(Fetcher(reg.url, authorization=f"Bearer {token}"), "team/busybox", "1", image)
        assert tokens.request_count == 1

        assert token_dance(reg, "team/busybox", ("alice", "nope"))[0] == 401
        # anonymous: a token without access, which the registry refuses
        status, anon = token_dance(reg, "team/busybox", None)
        assert status == 200 and decode_jwt(anon)[1]["access"][0]["actions"] == []
        assert (
            Fetcher(reg.url, authorization=f"Bearer {anon}").get("/v2/team/busybox/manifests/1", ob.OCI_MANIFEST)[0]
            == 401
        )
        assert [r.status for r in tokens.requests] == [200, 401, 200]

        # what distribution checks: a valid token from another key, or for another audience, is refused
        access = [{"type": "repository", "name": "team/busybox", "actions": ["pull"]}]
        with TokenServer(workdir / "other", users=users) as other:
            forged = other.issue("alice", access)
        assert (
            Fetcher(reg.url, authorization=f"Bearer {forged}").get("/v2/team/busybox/manifests/1", ob.OCI_MANIFEST)[0]
            == 401
        )
        wrong_aud = tokens.issue("alice", access, audience="elsewhere")
        assert (
            Fetcher(reg.url, authorization=f"Bearer {wrong_aud}").get("/v2/team/busybox/manifests/1", ob.OCI_MANIFEST)[
                0
            ]
            == 401
        )
        good = tokens.issue("alice", access)
        assert (
            Fetcher(reg.url, authorization=f"Bearer {good}").get("/v2/team/busybox/manifests/1", ob.OCI_MANIFEST)[0]
            == 200
        )
        token_port = tokens.port
    assert not tokens.running
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{token_port}/token", timeout=2)


def test_token_auth_with_anonymous_pull(workdir: Path, image: ob.Image) -> None:
    with Registry(workdir, auth="token", anonymous_pull=True, tls=True) as reg:
        reg.push("library/busybox", "1", image)
        status, token = token_dance(reg, "library/busybox", None)
        assert status == 200
        fetch = Fetcher(reg.url, reg.ssl_context(), authorization=f"Bearer {token}")
        check_round_trip(fetch, "library/busybox", "1", image)
        # anonymous push is refused: pull only
        with pytest.raises(RegistryError) as err:
            reg.push("library/other", "1", image, auth=None)
        assert err.value.status == 401
        # the helper client does the same dance, anonymously
        assert reg.client(auth=None).get_manifest("library/busybox", "1").body == image.manifest_bytes


def test_tamper_and_remove_blob(workdir: Path, image: ob.Image) -> None:
    with Registry(workdir) as reg:
        reg.push("busybox", "1", image)
        layer = image.layers[1]
        served = reg.tamper_blob(layer.digest)
        status, _, body = Fetcher(reg.url).get(f"/v2/busybox/blobs/{layer.digest}")
        assert status == 200 and body == served
        assert len(body) == layer.size and "sha256:" + hashlib.sha256(body).hexdigest() != layer.digest
        reg.tamper_blob(layer.digest, b"short")
        assert Fetcher(reg.url).get(f"/v2/busybox/blobs/{layer.digest}")[2] == b"short"
        reg.remove_blob(image.layers[2].digest)
        assert Fetcher(reg.url).get(f"/v2/busybox/blobs/{image.layers[2].digest}")[0] == 404


def test_stop_is_idempotent_and_reaps_a_killed_registry(workdir: Path) -> None:
    """stop() is idempotent and a registry killed from outside is still reaped."""
    reg = Registry(workdir).start()
    assert reg.pid is not None
    os.kill(reg.pid, 9)
    reg.stop()
    reg.stop()
    assert not reg.running


def test_busybox_image_runs(tmp_path: Path) -> None:
    """The busybox rootfs works: sh runs, applets are hard links to busybox."""
    root = tmp_path / "rootfs"
    root.mkdir()
    for layer in ob.busybox_image(extra_files={"hello": b"world\n"}).layers:
        with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tf:
            tf.extractall(root, filter="fully_trusted")
    assert (root / "bin/ls").stat().st_ino == (root / "bin/busybox").stat().st_ino
    out = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", "cat /hello; id -un; ls /bin/sleep && echo ok"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["world", "root", "/bin/sleep", "ok"]
