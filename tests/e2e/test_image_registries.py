"""ImageService end to end against registries that make it hard: TLS with a CA, client certificates,
Basic and token auth, mirrors that are down; and a pull's robustness: concurrent pulls, removal,
deadlines, a daemon killed mid-pull, a stalled registry, schema 1.
"""

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import grpc

from cri.api.v1 import api_pb2 as pb
from tests.e2e.conftest import Daemons
from tests.e2e.image_calls import (
    content_blobs,
    fs_used,
    leftovers,
    pull,
    registry,
    rpc_error,
    spec,
    status,
    write_hosts,
)
from tests.support import oci_build as ob
from tests.support.down_mirror import DownMirror
from tests.support.proxy import SlowProxy
from tests.support.registry import Registry

__all__ = ["registry"]  # the module's fixtures


# --- registries: TLS, auth, mirrors ------------------------------------------------------------


def test_tls_with_ca_from_hosts_toml(e2e_base: Path, daemons: Daemons) -> None:
    with Registry(Path(tempfile.mkdtemp(prefix="tls", dir=e2e_base)), tls=True) as reg:
        img = ob.busybox_image("gzip", extra_files={"tls": b"x"})
        reg.push("e2e/tls", "v1", img)
        d = daemons.start()
        ref = f"{reg.host}/e2e/tls:v1"
        write_hosts(d, reg.host, f'server = "{reg.url}"\n')  # https but no CA: verification fails
        err = rpc_error(pull, d, ref)
        assert "CERTIFICATE_VERIFY_FAILED" in err.details() or "certificate" in err.details().lower()
        write_hosts(d, reg.host, reg.hosts_toml())
        assert pull(d, ref) == img.image_id


def test_client_certificates_and_skip_verify(e2e_base: Path, daemons: Daemons) -> None:
    """A registry that asks for a client certificate: hosts.toml's ``client``, and ``skip_verify``."""
    with Registry(Path(tempfile.mkdtemp(prefix="mtls", dir=e2e_base)), client_auth=True) as reg:
        assert reg.ca is not None and reg.client_cert is not None
        img = ob.busybox_image("gzip", extra_files={"mtls": b"x"})
        reg.push("e2e/mtls", "v1", img)
        d = daemons.start()
        ref = f"{reg.host}/e2e/mtls:v1"
        write_hosts(d, reg.host, f'server = "{reg.url}"\nca = "{reg.ca.cert}"\n')  # trusted, but no certificate
        err = rpc_error(pull, d, ref)
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
        write_hosts(d, reg.host, reg.hosts_toml())
        assert pull(d, ref) == img.image_id  # the layers too: the pull's processes present the certificate
        d.client.image.RemoveImage(pb.RemoveImageRequest(image=spec(ref)))
        cert, key = reg.client_cert.cert, reg.client_cert.key
        write_hosts(d, reg.host, f'server = "{reg.url}"\nskip_verify = true\nclient = [["{cert}", "{key}"]]\n')
        assert pull(d, ref) == img.image_id  # no CA: the server's certificate is not checked


def test_basic_auth(e2e_base: Path, daemons: Daemons) -> None:
    with Registry(Path(tempfile.mkdtemp(prefix="basic", dir=e2e_base)), auth="basic") as reg:
        img = ob.busybox_image("gzip", extra_files={"basic": b"x"})
        reg.push("e2e/basic", "v1", img)
        user, password = reg.credentials or ("", "")
        d = daemons.start()
        ref = f"{reg.host}/e2e/basic:v1"
        err = rpc_error(pull, d, ref)
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
        wrong = rpc_error(pull, d, ref, pb.AuthConfig(username=user, password="wrong-secret-123"))
        assert wrong.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "wrong-secret-123" not in wrong.details()
        assert pull(d, ref, pb.AuthConfig(username=user, password=password)) == img.image_id
        import base64

        encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
        assert pull(d, ref, pb.AuthConfig(auth=encoded)) == img.image_id
        assert password not in d.log_text() and "wrong-secret-123" not in d.log_text()


def test_bearer_token_auth(e2e_base: Path, daemons: Daemons) -> None:
    with Registry(Path(tempfile.mkdtemp(prefix="tok", dir=e2e_base)), auth="token") as reg:
        img = ob.busybox_image("gzip", extra_files={"token": b"x"})
        reg.push("e2e/token", "v1", img)
        user, password = reg.credentials or ("", "")
        d = daemons.start()
        ref = f"{reg.host}/e2e/token:v1"
        err = rpc_error(pull, d, ref)  # anonymous pull is not allowed by this token server
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
        assert pull(d, ref, pb.AuthConfig(username=user, password=password)) == img.image_id
        assert password not in d.log_text()


def test_down_mirror_falls_back_to_the_next_host(registry: Registry, daemons: Daemons) -> None:
    img = ob.busybox_image("gzip", extra_files={"mirror": b"x"})
    registry.push("e2e/mirror", "v1", img)
    with DownMirror("503") as down, DownMirror("refuse") as refused:
        d = daemons.start()
        write_hosts(
            d,
            registry.host,
            f'server = "{registry.url}"\n'
            f'[host."{refused.url}"]\ncapabilities = ["pull", "resolve"]\n'
            f'[host."{down.url}"]\ncapabilities = ["pull", "resolve"]\n',
        )
        assert pull(d, f"{registry.host}/e2e/mirror:v1") == img.image_id
        assert down.requests >= 1


def test_an_answer_from_a_mirror_is_not_buried_under_a_dead_server(registry: Registry, daemons: Daemons) -> None:
    with DownMirror("refuse") as dead:
        d = daemons.start()
        write_hosts(
            d, registry.host, f'server = "{dead.url}"\n[host."{registry.url}"]\ncapabilities = ["pull", "resolve"]\n'
        )
        err = rpc_error(pull, d, f"{registry.host}/e2e/nowhere:v1")
        assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
        assert dead.host not in err.details()


def test_concurrent_pulls_download_each_blob_once(registry: Registry, daemons: Daemons) -> None:
    layers = [ob.Layer([ob.File(f"big{i}", os.urandom(2 << 20))], "gzip") for i in range(3)]
    img = ob.busybox_image("gzip", extra_layers=layers)
    registry.push("e2e/concurrent", "v1", img)
    registry.push("e2e/concurrent-b", "v1", img)
    d = daemons.start()
    registry.reset_requests()
    refs = [f"{registry.host}/e2e/concurrent:v1"] * 3 + [f"{registry.host}/e2e/concurrent-b:v1"] * 2
    results: list[str] = []
    threads = [threading.Thread(target=lambda r=r: results.append(pull(d, r))) for r in refs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [img.image_id] * len(refs)
    for layer in img.layers:
        assert registry.blob_downloads(layer.digest) == 1, layer.digest


def test_remove_image_frees_space_and_is_idempotent(registry: Registry, daemons: Daemons) -> None:
    img = ob.busybox_image("gzip", extra_layers=[ob.Layer([ob.File("blob", os.urandom(1 << 20))], "none")])
    registry.push("e2e/remove", "v1", img)
    registry.push("e2e/remove", "v2", img)
    d = daemons.start()
    empty = fs_used(d)
    ref = f"{registry.host}/e2e/remove:v1"
    pull(d, ref)
    pull(d, f"{registry.host}/e2e/remove:v2")
    assert fs_used(d) > empty + (1 << 20)
    errors: list[BaseException] = []

    def remove() -> None:
        try:
            d.client.image.RemoveImage(pb.RemoveImageRequest(image=spec(ref)))
        except grpc.RpcError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=remove) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert status(d, f"{registry.host}/e2e/remove:v2").image.id == ""  # every tag went with it
    assert fs_used(d) == empty
    assert content_blobs(d) == set()
    assert list((Path(d.root) / "snapshots").iterdir()) == []
    d.client.image.RemoveImage(pb.RemoveImageRequest(image=spec(img.image_id)))  # unknown now: still fine


def test_one_ms_deadline_leaves_nothing_behind(registry: Registry, daemons: Daemons) -> None:
    img = ob.busybox_image("gzip", extra_layers=[ob.Layer([ob.File("f", os.urandom(4 << 20))], "gzip")])
    registry.push("e2e/deadline", "v1", img)
    d = daemons.start()
    err = rpc_error(pull, d, f"{registry.host}/e2e/deadline:v1", None, 0.001)
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (leftovers(d) or content_blobs(d)):
        time.sleep(0.05)
    assert leftovers(d) == [] and content_blobs(d) == set()
    assert list(d.client.image.ListImages(pb.ListImagesRequest()).images) == []
    assert pull(d, f"{registry.host}/e2e/deadline:v1") == img.image_id  # and it still works


def _ingest_written(ingest: Path) -> bool:
    """Whether an ingest file holds bytes (one may go between the listing and its stat)."""
    for path in ingest.glob("*"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > 0:
                return True
    return False


def test_sigkill_mid_pull_then_restart(registry: Registry, daemons: Daemons) -> None:
    small = ob.busybox_image("gzip", extra_files={"before": b"x"})
    registry.push("e2e/before", "v1", small)
    big_layer = ob.Layer([ob.File("big", os.urandom(8 << 20))], "none")
    big = ob.busybox_image("gzip", extra_layers=[big_layer])
    registry.push("e2e/killed", "v1", big)
    with SlowProxy(registry.host, bytes_per_second=2 << 20) as proxy:
        d = daemons.start()
        write_hosts(d, registry.host, f'server = "http://{proxy.host}"\n')
        pull(d, f"{registry.host}/e2e/before:v1")
        t = threading.Thread(target=lambda: rpc_error(pull, d, f"{registry.host}/e2e/killed:v1"))
        t.start()
        ingest = Path(d.root) / "content" / "ingest"
        deadline = time.monotonic() + 20
        while not (writing := _ingest_written(ingest)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert writing, "the pull never started writing"  # decided once: a retry may replace the file
        assert d.proc is not None
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        t.join()
        assert big_layer.digest not in content_blobs(d)
        write_hosts(d, registry.host, f'server = "{registry.url}"\n')
        d.start()
        assert leftovers(d) == []
        assert status(d, f"{registry.host}/e2e/before:v1").image.id == small.image_id
        assert pull(d, f"{registry.host}/e2e/killed:v1") == big.image_id
        assert big_layer.digest in content_blobs(d)


def test_a_lost_snapshot_directory_is_dropped_at_startup(registry: Registry, daemons: Daemons) -> None:
    """Recovery's own repair case: a snapshot row whose directory is gone. The row is dropped on the
    event loop's thread (SQLite refuses a connection shared across threads), and a pull unpacks again."""
    extra = ob.Layer([ob.File("lost-layer", b"x")], "gzip")
    img = ob.busybox_image("gzip", extra_layers=[extra])
    registry.push("e2e/lost", "v1", img)
    ref = f"{registry.host}/e2e/lost:v1"
    d = daemons.start()
    pull(d, ref)
    d.stop()
    snapshots = sorted((Path(d.root) / "snapshots").glob("[0-9]*"), key=lambda p: int(p.name))
    shutil.rmtree(snapshots[-1])  # the top layer's
    d.start()
    assert status(d, ref).image.id == img.image_id
    registry.reset_requests()
    assert pull(d, ref) == img.image_id
    assert snapshots[-1].exists() or len(list((Path(d.root) / "snapshots").glob("[0-9]*"))) == len(snapshots)
    assert "unexpected error" not in d.log_text() and "Traceback" not in d.log_text()


def test_stalled_registry_hits_the_progress_timeout(daemons: Daemons) -> None:
    with DownMirror("hang") as hang:
        d = daemons.start(images={"pull_progress_timeout_seconds": 1.5})
        t0 = time.monotonic()
        err = rpc_error(pull, d, f"{hang.host}/e2e/stalled:v1")
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
        assert "no progress" in err.details()
        assert time.monotonic() - t0 < 10


def test_schema1_is_refused_clearly(daemons: Daemons) -> None:
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps({"schemaVersion": 1, "name": "e2e/old", "tag": "v1", "fsLayers": []}).encode()

    class Old(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Old)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        d = daemons.start()
        err = rpc_error(pull, d, f"127.0.0.1:{server.server_address[1]}/e2e/old:v1")
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "schema 1" in err.details()
    finally:
        server.shutdown()
        server.server_close()
