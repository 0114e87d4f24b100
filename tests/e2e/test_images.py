"""ImageService end to end: a real crid pulling from a real docker-registry.

Images are built by tests/support/oci_build.py from busybox-static and pushed
to registries the fixtures start on loopback (plain, TLS, Basic, token).
"""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess
from tests.e2e.image_calls import (
    CAP_NET_RAW,
    content_blobs,
    crid_img,
    leftovers,
    pull,
    registry,
    rpc_error,
    spec,
    status,
    write_hosts,
)
from tests.support import oci_build as ob
from tests.support.malicious import malicious_cases
from tests.support.registry import Registry

__all__ = ["crid_img", "registry"]  # the module's fixtures


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


def test_a_pull_loads_no_http_library_into_the_daemon(registry: Registry, crid_img: CridProcess) -> None:
    """The registry client is on h11, which the daemon has loaded for its streaming server: after a
    pull the daemon has mapped none of aiohttp's extension modules (6 MiB it would keep for good)."""
    img = ob.busybox_image("gzip", extra_files={"etc/registry-client": b"x\n"})
    registry.push("e2e/client", "v1", img)
    assert pull(crid_img, f"{registry.host}/e2e/client:v1") == img.image_id
    assert crid_img.proc is not None
    maps = Path(f"/proc/{crid_img.proc.pid}/maps").read_text()
    assert "/grpc/_cython/" in maps  # what the check sees: the extension modules loaded
    assert "/aiohttp/" not in maps and "/multidict/" not in maps and "/yarl/" not in maps


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


ESCAPE_DIR = Path("/tmp/crid-e2e-escape")  # outside the daemon's dirs: where the layers try to write


@pytest.mark.parametrize("case", malicious_cases(str(ESCAPE_DIR)), ids=lambda c: c.name)
def test_malicious_layers(registry: Registry, crid_img: CridProcess, case: object) -> None:
    from tests.support.malicious import MaliciousCase

    assert isinstance(case, MaliciousCase)
    ESCAPE_DIR.mkdir(exist_ok=True)
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
        shutil.rmtree(ESCAPE_DIR, ignore_errors=True)  # and the victims: nothing is left in /tmp


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
