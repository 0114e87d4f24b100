"""ImageService end to end: a real crid pulling from a real docker-registry.

Images are built by tests/support/oci_build.py from busybox-static and pushed
to registries the fixtures start on loopback (plain, TLS, Basic, token).
"""

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.conftest import Daemons
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support.malicious import malicious_cases
from tests.support.proxy import SlowProxy
from tests.support.registry import DownMirror, Registry

CAP_NET_RAW = 13


def spec(ref: str) -> pb.ImageSpec:
    return pb.ImageSpec(image=ref)


def pull(d: CridProcess, ref: str, auth: pb.AuthConfig | None = None, timeout: float = 60) -> str:
    req = pb.PullImageRequest(image=spec(ref), auth=auth)
    return str(d.client.image.PullImage(req, timeout=timeout).image_ref)


def status(d: CridProcess, ref: str, verbose: bool = False) -> pb.ImageStatusResponse:
    resp: pb.ImageStatusResponse = d.client.image.ImageStatus(pb.ImageStatusRequest(image=spec(ref), verbose=verbose))
    return resp


def fs_used(d: CridProcess) -> int:
    return int(d.client.image.ImageFsInfo(pb.ImageFsInfoRequest()).image_filesystems[0].used_bytes.value)


def content_blobs(d: CridProcess) -> set[str]:
    blobs = Path(d.root) / "content" / "blobs" / "sha256"
    return {f"sha256:{n}" for n in os.listdir(blobs)} if blobs.exists() else set()


def leftovers(d: CridProcess) -> list[str]:
    """Half-done work in crid's store: ingest files and unpacks in progress."""
    root = Path(d.root)
    found = [str(p) for p in (root / "content" / "ingest").glob("*")]
    found += [str(p) for p in (root / "snapshots").glob("tmp-*")]
    return found


def rpc_error(fn: object, *args: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        fn(*args)  # type: ignore[operator]
    return err.value


@pytest.fixture(scope="module")
def registry(e2e_base: Path) -> Iterator[Registry]:
    with Registry(Path(tempfile.mkdtemp(prefix="reg", dir=e2e_base))) as reg:
        yield reg


@pytest.fixture(scope="module")
def crid_img(e2e_base: Path) -> Iterator[CridProcess]:
    d = CridProcess(Path(tempfile.mkdtemp(prefix="img", dir=e2e_base))).start()
    yield d
    d.stop()


def write_hosts(d: CridProcess, host: str, text: str) -> None:
    hd = Path(d.config.images.registry_config_dir) / host
    hd.mkdir(parents=True, exist_ok=True)
    (hd / "hosts.toml").write_text(text)


# --- pulling and looking up ---------------------------------------------------------


def test_pull_by_tag_and_every_kind_of_lookup(registry: Registry, crid_img: CridProcess) -> None:
    img = ob.busybox_image("gzip", extra_files={"etc/hello": b"hi\n"}, config=ob.ImageConfig(user="1002"))
    digest = registry.push("e2e/lookup", "v1", img)
    ref = f"{registry.host}/e2e/lookup:v1"
    image_id = pull(crid_img, ref)
    assert image_id == img.image_id
    image = status(crid_img, ref).image
    assert image.id == image_id
    assert list(image.repo_tags) == [ref]
    assert list(image.repo_digests) == [f"{registry.host}/e2e/lookup@{digest}"]
    assert image.uid.value == 1002 and image.username == ""
    assert image.size >= sum(layer.size for layer in img.layers)
    for lookup in (image_id, image_id.removeprefix("sha256:"), image_id[7:19], f"{registry.host}/e2e/lookup@{digest}"):
        assert status(crid_img, lookup).image.id == image_id, lookup
    listed = crid_img.client.image.ListImages(pb.ListImagesRequest()).images
    assert image_id in [i.id for i in listed]
    only = crid_img.client.image.ListImages(pb.ListImagesRequest(filter=pb.ImageFilter(image=spec(ref)))).images
    assert [i.id for i in only] == [image_id]


def test_unknown_image_is_an_empty_status(crid_img: CridProcess) -> None:
    resp = status(crid_img, "127.0.0.1:1/nothing/here:v1")
    assert not resp.HasField("image")
    assert status(crid_img, "sha256:" + "0" * 64).image.id == ""


def test_verbose_status(registry: Registry, crid_img: CridProcess) -> None:
    import json

    img = ob.busybox_image("gzip", config=ob.ImageConfig(user="www-data:1004"))
    registry.push("e2e/verbose", "v1", img)
    ref = f"{registry.host}/e2e/verbose:v1"
    pull(crid_img, ref)
    resp = status(crid_img, ref, verbose=True)
    assert resp.image.username == "www-data" and not resp.image.HasField("uid")
    info = json.loads(resp.info["info"])
    assert info["chainIDs"] == img.chain_ids()
    assert info["imageSpec"]["config"]["User"] == "www-data:1004"


def test_same_image_under_two_names_is_one_image(registry: Registry, crid_img: CridProcess) -> None:
    img = ob.busybox_image("gzip", extra_files={"two-names": b"x"})
    registry.push("e2e/first", "a", img)
    registry.push("e2e/first", "b", img)
    registry.push("e2e/second", "c", img)
    refs = [f"{registry.host}/e2e/first:a", f"{registry.host}/e2e/first:b", f"{registry.host}/e2e/second:c"]
    ids = {pull(crid_img, r) for r in refs}
    assert ids == {img.image_id}
    image = status(crid_img, refs[0]).image
    assert sorted(image.repo_tags) == sorted(refs)
    assert len(image.repo_digests) == 2  # one per repository
    listed = [i for i in crid_img.client.image.ListImages(pb.ListImagesRequest()).images if i.id == img.image_id]
    assert len(listed) == 1


def test_pull_by_digest_records_only_the_digest(registry: Registry, crid_img: CridProcess) -> None:
    img = ob.busybox_image("none", extra_files={"by-digest": b"x"})
    digest = registry.push("e2e/bydigest", "t", img)
    ref = f"{registry.host}/e2e/bydigest@{digest}"
    assert pull(crid_img, ref) == img.image_id
    image = status(crid_img, ref).image
    assert list(image.repo_tags) == []
    assert list(image.repo_digests) == [ref]
    # tag@digest pulls the digest, as containerd does
    assert pull(crid_img, f"{registry.host}/e2e/bydigest:other@{digest}") == img.image_id
    assert list(status(crid_img, ref).image.repo_tags) == []


def test_multiarch_index_picks_the_host_platform(registry: Registry, crid_img: CridProcess) -> None:
    for docker in (False, True):
        index = ob.multiarch_index(docker=docker, compression="zstd", attestation=True)
        registry.push("e2e/multi", f"docker-{docker}", index)
        ref = f"{registry.host}/e2e/multi:docker-{docker}"
        image_id = pull(crid_img, ref)
        assert image_id == index.image_for("amd64").image_id
        image = status(crid_img, ref).image
        assert f"{registry.host}/e2e/multi@{index.digest}" in image.repo_digests
        if not docker:  # (the Docker variant has the same config: one image, sized by its first pull)
            # containerd's Image.Size: the index, the platform's manifest, its config and layers
            chosen = index.image_for("amd64")
            want = len(index.manifest_bytes) + len(chosen.manifest_bytes) + len(chosen.config_bytes)
            assert image.size == want + sum(layer.size for layer in chosen.layers)


def test_short_name_through_docker_io_hosts_toml(registry: Registry, crid_img: CridProcess) -> None:
    img = ob.busybox_image("gzip", extra_files={"short": b"x"})
    registry.push("library/shortname", "latest", img)
    write_hosts(crid_img, "docker.io", f'server = "{registry.url}"\n')
    try:
        assert pull(crid_img, "shortname") == img.image_id
        image = status(crid_img, "shortname").image
        assert list(image.repo_tags) == ["docker.io/library/shortname:latest"]
        assert status(crid_img, "docker.io/library/shortname").image.id == img.image_id
    finally:
        (Path(crid_img.config.images.registry_config_dir) / "docker.io" / "hosts.toml").unlink()


def test_invalid_reference(crid_img: CridProcess) -> None:
    err = rpc_error(pull, crid_img, "Bad/Name")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "lowercase" in err.details()


def test_missing_image_is_not_found(registry: Registry, crid_img: CridProcess) -> None:
    err = rpc_error(pull, crid_img, f"{registry.host}/e2e/absent:v1")
    assert err.code() == grpc.StatusCode.NOT_FOUND, err.details()
    assert "not found" in err.details()


def test_unknown_layer_media_type_fails_naming_it(registry: Registry, crid_img: CridProcess) -> None:
    odd = ob.Layer([ob.File("x", b"x")], "none", media_type="application/vnd.example.weird")
    img = ob.busybox_image("gzip", extra_layers=[odd])
    registry.push("e2e/weird", "v1", img)
    err = rpc_error(pull, crid_img, f"{registry.host}/e2e/weird:v1")
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "application/vnd.example.weird" in err.details()


# --- what lands on disk -------------------------------------------------------------------


def test_rootfs_as_overlay(registry: Registry, crid_img: CridProcess, tmp_path: Path) -> None:
    import json

    lower = ob.Layer(
        [
            ob.File("etc/motd", b"old"),
            ob.File("var/cache/old", b"old"),
            ob.Dir("var/cache/sub"),
            ob.File("keep/me", b"kept"),
        ],
        "gzip",
    )
    upper = ob.Layer(
        [
            ob.Whiteout("etc/motd"),
            ob.Opaque("var/cache"),
            ob.File("var/cache/new", b"new"),
            ob.File("srv/setuid", b"#!", mode=0o4755, uid=1000, gid=1001),
            ob.File("srv/ping", b"p", xattrs={"security.capability": ob.file_caps(1 << CAP_NET_RAW)}),
            ob.Hardlink("srv/ping2", "srv/ping"),
            ob.Symlink("srv/link", "/keep/me"),
        ],
        "zstd",
    )
    img = ob.busybox_image("none", extra_layers=[lower, upper])
    registry.push("e2e/overlay", "v1", img)
    ref = f"{registry.host}/e2e/overlay:v1"
    pull(crid_img, ref)
    dirs = json.loads(status(crid_img, ref, verbose=True).info["info"])["snapshots"]
    target = tmp_path / "rootfs"
    target.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=" + ":".join(dirs), str(target)], check=True)
    try:
        assert not (target / "etc/motd").exists()
        assert sorted(os.listdir(target / "var/cache")) == ["new"]
        assert (target / "keep/me").read_bytes() == b"kept"
        st = os.lstat(target / "srv/setuid")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1000, 1001)
        assert os.lstat(target / "srv/ping").st_ino == os.lstat(target / "srv/ping2").st_ino
        assert os.getxattr(target / "srv/ping", "security.capability") == ob.file_caps(1 << CAP_NET_RAW)
        assert os.readlink(target / "srv/link") == "/keep/me"
        assert os.access(target / "bin/busybox", os.X_OK)
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.parametrize("case", malicious_cases("/tmp/crid-e2e-escape"), ids=lambda c: c.name)
def test_malicious_layers(registry: Registry, crid_img: CridProcess, case: object) -> None:
    from tests.support.malicious import MaliciousCase

    assert isinstance(case, MaliciousCase)
    Path("/tmp/crid-e2e-escape").mkdir(exist_ok=True)
    case.prepare()
    repo = f"e2e/evil-{case.name}"
    img = case.image()
    registry.push(repo, "v1", img)
    ref = f"{registry.host}/{repo}:v1"
    try:
        if case.name == "absolute" or case.contained:  # kept inside the snapshot, as containerd does
            pull(crid_img, ref)
        else:
            err = rpc_error(pull, crid_img, ref)
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err.details()
            assert "layer entry" in err.details(), err.details()
            assert status(crid_img, ref).image.id == ""
        assert case.violations() == []
        assert leftovers(crid_img) == []
    finally:
        case.prepare()  # removes forbidden files if the attack got through


def test_tampered_blob_fails_and_commits_nothing(registry: Registry, crid_img: CridProcess) -> None:
    bad = ob.Layer([ob.File("tampered", os.urandom(4096))], "gzip")
    img = ob.busybox_image("gzip", extra_layers=[bad])
    registry.push("e2e/tampered", "v1", img)
    registry.tamper_blob(bad.digest)
    err = rpc_error(pull, crid_img, f"{registry.host}/e2e/tampered:v1")
    assert "digest mismatch" in err.details() and bad.digest in err.details()
    assert bad.digest not in content_blobs(crid_img)
    assert img.config_digest not in content_blobs(crid_img)
    assert status(crid_img, f"{registry.host}/e2e/tampered:v1").image.id == ""
    assert leftovers(crid_img) == []


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


# --- robustness -------------------------------------------------------------------------------


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
