"""The image builder of tests/support: tar contents, digests, media types,
configs, manifests, indexes, and hostile layers that really are hostile."""

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from tests.support import oci_build as ob
from tests.support.malicious import CASE_NAMES, MaliciousCase, malicious_case, malicious_cases


def members(layer: ob.Layer) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer.tar), mode="r:") as tf:
        return {m.name: m for m in tf.getmembers()}


def test_busybox_layer_hard_links_applets_to_busybox() -> None:
    layer = ob.busybox_layer()
    m = members(layer)
    assert m["bin/busybox"].isreg() and m["bin/busybox"].mode == 0o755
    assert m["bin/busybox"].size == os.path.getsize(ob.BUSYBOX)
    for applet in ("sh", "ls", "cat", "echo", "sleep", "true", "id", "env", "mkdir", "wget", "nc", "hostname"):
        assert m[f"bin/{applet}"].islnk(), applet
        assert m[f"bin/{applet}"].linkname == "bin/busybox"
    assert not any(info.issym() for info in m.values())
    assert m["tmp"].isdir() and m["tmp"].mode == 0o1777
    assert m["root"].mode == 0o700
    with tarfile.open(fileobj=io.BytesIO(layer.tar)) as tf:
        passwd = tf.extractfile("etc/passwd")
        group = tf.extractfile("etc/group")
        assert passwd is not None and group is not None
        assert passwd.read().startswith(b"root:x:0:0:")
        assert b"www-data:x:33:" in group.read()


def test_busybox_layer_leaves_out_applets_the_binary_lacks() -> None:
    names = members(ob.busybox_layer(applets=["sh", "no-such-applet"]))
    assert "bin/sh" in names and "bin/no-such-applet" not in names


def test_layer_digests_and_compressions() -> None:
    entries: list[ob.Entry] = [ob.Dir("etc"), ob.File("etc/motd", b"hello\n")]
    tars = set()
    for compression, magic, media in (
        ("gzip", b"\x1f\x8b", ob.OCI_LAYER_GZIP),
        ("zstd", b"\x28\xb5\x2f\xfd", ob.OCI_LAYER_ZSTD),
        ("none", b"etc/", ob.OCI_LAYER),
    ):
        layer = ob.Layer(entries, compression)  # type: ignore[arg-type]
        tars.add(layer.tar)
        assert layer.blob.startswith(magic)
        assert layer.diff_id == "sha256:" + hashlib.sha256(layer.tar).hexdigest()
        assert layer.digest == "sha256:" + hashlib.sha256(layer.blob).hexdigest()
        assert ob.decompress(layer.blob, layer.compression) == layer.tar
        assert layer.media_type() == media
        assert layer.descriptor() == {"mediaType": media, "digest": layer.digest, "size": len(layer.blob)}
    assert len(tars) == 1  # the same tar whatever the compression
    assert ob.Layer(entries, "gzip").media_type(docker=True) == ob.DOCKER_LAYER_GZIP
    assert ob.Layer(entries, "none").media_type(docker=True) == ob.DOCKER_LAYER
    assert gzip.decompress(ob.Layer(entries, "gzip").blob) == ob.Layer(entries, "none").blob
    assert zstandard.ZstdDecompressor().decompress(ob.Layer(entries, "zstd").blob) == ob.Layer(entries, "none").blob


def test_builds_are_reproducible() -> None:
    assert ob.busybox_image().digest == ob.busybox_image().digest
    assert ob.busybox_layer("zstd").digest == ob.busybox_layer("zstd").digest


def test_entry_kinds_and_xattrs() -> None:
    caps = ob.file_caps(1 << 13)  # CAP_NET_RAW
    layer = ob.Layer(
        [
            ob.Dir("/opt", mode=0o750, uid=5, gid=6),
            ob.File("opt/ping", b"\x7fELF", mode=0o4755, uid=0, gid=0, xattrs={"security.capability": caps}),
            ob.File("opt/user.txt", b"x", xattrs={"user.note": b"hello"}),
            ob.Symlink("opt/link", "../etc/passwd"),
            ob.Hardlink("opt/hard", "/opt/ping"),
            ob.Whiteout("etc/gone"),
            ob.Whiteout("top"),
            ob.Opaque("var/cache"),
            ob.Device("dev/null", "c", 1, 3),
            ob.Device("run/fifo", "p"),
        ],
        "none",
    )
    m = members(layer)
    assert m["opt"].isdir() and m["opt"].mode == 0o750 and (m["opt"].uid, m["opt"].gid) == (5, 6)
    ping = m["opt/ping"]
    assert ping.mode == 0o4755
    assert ping.pax_headers["SCHILY.xattr.security.capability"].encode("utf-8", "surrogateescape") == caps
    assert m["opt/user.txt"].pax_headers["SCHILY.xattr.user.note"] == "hello"
    assert m["opt/link"].issym() and m["opt/link"].linkname == "../etc/passwd"
    assert m["opt/hard"].islnk() and m["opt/hard"].linkname == "opt/ping"
    assert "etc/.wh.gone" in m and ".wh.top" in m and "var/cache/.wh..wh..opq" in m
    assert m["dev/null"].ischr() and (m["dev/null"].devmajor, m["dev/null"].devminor) == (1, 3)
    assert m["run/fifo"].isfifo()
    assert len(caps) == 20 and caps[:4] == (0x02000001).to_bytes(4, "little")


def test_long_names_survive() -> None:
    name = "a/" + "b" * 150 + "/" + "c" * 120
    assert name in members(ob.Layer([ob.File(name, b"x")], "none"))


def test_image_config_and_manifest() -> None:
    config = ob.ImageConfig(
        entrypoint=["/bin/sh", "-c"],
        cmd=["echo hi"],
        env=["PATH=/bin", "A=b"],
        user="1002:1003",
        working_dir="/tmp",
        labels={"k": "v"},
        exposed_ports=["80/tcp"],
        stop_signal="SIGUSR1",
        volumes=["/data"],
    )
    layers = [ob.busybox_layer("gzip"), ob.Layer([ob.File("a", b"a")], "zstd"), ob.Layer([ob.File("b")], "none")]
    image = ob.Image(layers, config, architecture="amd64")
    cfg = json.loads(image.config_bytes)
    assert cfg["architecture"] == "amd64" and cfg["os"] == "linux"
    assert cfg["config"] == {
        "User": "1002:1003",
        "ExposedPorts": {"80/tcp": {}},
        "Env": ["PATH=/bin", "A=b"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hi"],
        "Volumes": {"/data": {}},
        "WorkingDir": "/tmp",
        "Labels": {"k": "v"},
        "StopSignal": "SIGUSR1",
    }
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
    assert len(cfg["history"]) == 3
    manifest = json.loads(image.manifest_bytes)
    assert manifest["schemaVersion"] == 2 and manifest["mediaType"] == ob.OCI_MANIFEST
    assert manifest["config"] == {
        "mediaType": ob.OCI_CONFIG,
        "digest": "sha256:" + hashlib.sha256(image.config_bytes).hexdigest(),
        "size": len(image.config_bytes),
    }
    assert [d["mediaType"] for d in manifest["layers"]] == [ob.OCI_LAYER_GZIP, ob.OCI_LAYER_ZSTD, ob.OCI_LAYER]
    assert [d["digest"] for d in manifest["layers"]] == [layer.digest for layer in layers]
    assert image.digest == "sha256:" + hashlib.sha256(image.manifest_bytes).hexdigest()
    assert image.image_id == image.config_digest
    chain = image.chain_ids()
    assert chain[0] == layers[0].diff_id
    assert chain[1] == "sha256:" + hashlib.sha256(f"{chain[0]} {layers[1].diff_id}".encode()).hexdigest()


def test_docker_schema2_variant() -> None:
    image = ob.busybox_image(docker=True)
    manifest = json.loads(image.manifest_bytes)
    assert manifest["mediaType"] == ob.DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == ob.DOCKER_CONFIG
    assert {d["mediaType"] for d in manifest["layers"]} == {ob.DOCKER_LAYER_GZIP}
    assert image.config_digest == ob.busybox_image().config_digest  # same config bytes
    assert image.digest != ob.busybox_image().digest


@pytest.mark.parametrize("docker", [False, True])
def test_multiarch_index(docker: bool) -> None:
    index = ob.multiarch_index(docker=docker, attestation=True)
    doc = json.loads(index.manifest_bytes)
    assert doc["mediaType"] == (ob.DOCKER_LIST if docker else ob.OCI_INDEX)
    platforms = [d["platform"] for d in doc["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
        {"architecture": "unknown", "os": "unknown"},
    ]
    assert doc["manifests"][2]["annotations"]["vnd.docker.reference.type"] == "attestation-manifest"
    for desc, image in zip(doc["manifests"], index.manifests, strict=True):
        assert desc["digest"] == image.digest and desc["size"] == len(image.manifest_bytes)
        assert desc["mediaType"] == image.media_type
    amd64 = index.image_for("amd64")
    arm64 = index.image_for("arm64")
    assert "platform" in members(amd64.layers[-1]) and "bin/busybox" in members(amd64.layers[0])
    assert "bin/busybox" not in members(arm64.layers[0])
    blobs = dict(ob.iter_blobs(index))
    assert amd64.config_digest in blobs and arm64.layers[0].digest in blobs
    assert [d for d, _ in ob.iter_manifests(index)][-1] == index.digest


def test_write_oci_layout(tmp_path: Path) -> None:
    index = ob.multiarch_index()
    ob.write_oci_layout(tmp_path, index, "v1")
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    top = json.loads((tmp_path / "index.json").read_text())["manifests"][0]
    assert top["digest"] == index.digest and top["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    for blob in (tmp_path / "blobs/sha256").iterdir():
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
    for digest, _ in [*ob.iter_blobs(index), *ob.iter_manifests(index)]:
        assert (tmp_path / "blobs/sha256" / digest.removeprefix("sha256:")).is_file()


def test_random_files_layer_is_incompressible_and_seeded() -> None:
    a = ob.random_files_layer(3 << 20, file_size=1 << 20, seed=1)
    assert a.digest == ob.random_files_layer(3 << 20, file_size=1 << 20, seed=1).digest
    assert a.digest != ob.random_files_layer(3 << 20, file_size=1 << 20, seed=2).digest
    assert len(a.blob) > 3 << 20
    m = members(a)
    assert sorted(n for n in m if n.endswith(".bin")) == [f"data/blob-{i:04d}.bin" for i in range(3)]
    assert sum(info.size for info in m.values()) == 3 << 20


def test_small_files_layer() -> None:
    layer = ob.small_files_layer(1000, per_dir=100, seed=3)
    files = [info for info in members(layer).values() if info.isfile()]
    assert len(files) == 1000 and all(f.size <= 2048 for f in files)
    assert layer.digest == ob.small_files_layer(1000, per_dir=100, seed=3).digest


def test_big_image_shape() -> None:
    image = ob.big_image(2 << 20, layers=2, file_size=1 << 20, small_files=50, seed=7, compression="zstd")
    assert len(image.layers) == 1 + 2 + 1
    assert {layer.media_type() for layer in image.layers} == {ob.OCI_LAYER_ZSTD}
    assert json.loads(image.config_bytes)["rootfs"]["diff_ids"] == [layer.diff_id for layer in image.layers]


# ---------------------------------------------------------------- hostile layers


def raw_names(layer: ob.Layer) -> list[tuple[str, str]]:
    with tarfile.open(fileobj=io.BytesIO(layer.tar), mode="r:") as tf:
        return [(m.name, m.linkname) for m in tf.getmembers()]


def test_malicious_entries_are_written_verbatim(tmp_path: Path) -> None:
    out = str(tmp_path)
    names = {c.name: [n for layer in c.layers for n in raw_names(layer)] for c in malicious_cases(out)}
    assert names["traversal"][0][0].startswith("../../") and names["traversal"][0][0].endswith(
        f"{out.lstrip('/')}/crid-escape-traversal"
    )
    assert names["absolute"] == [(f"{out}/crid-escape-absolute", "")]
    assert names["symlink-abs"][0] == ("evil", out)
    assert names["symlink-rel"][0][1].startswith("../../")
    assert names["symlink-abs-two-layers"] == [("evil", out), ("evil/crid-escape-symlink-abs-two-layers", "")]
    assert names["hardlink-abs"] == [("stolen", f"{out}/crid-victim-hardlink-abs")]
    assert names["whiteout-traversal"][0][0].startswith("../../")
    assert names["whiteout-traversal"][0][0].endswith("/.wh.crid-victim-whiteout-traversal")
    assert names["whiteout-dotdot"][1:] == [(".wh...", ""), ("usr/.wh...", "")]
    # in the raw bytes too, not only as tarfile reads them back
    assert f"{out}/crid-escape-absolute".encode() in malicious_case("absolute", out).layers[0].tar
    assert set(CASE_NAMES) == set(names)


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def naive_unpack(root: Path, layer: ob.Layer) -> None:
    """The unpacker every hostile case is written against: joins names, follows
    links, writes through hard links, deletes what whiteouts name."""
    with tarfile.open(fileobj=io.BytesIO(layer.tar), mode="r:") as tf:
        for m in tf.getmembers():
            path = os.path.join(root, m.name)
            base = os.path.basename(m.name)
            try:
                if base == ".wh..wh..opq":
                    for child in os.listdir(os.path.dirname(path)):
                        _remove(os.path.join(os.path.dirname(path), child))
                elif base.startswith(".wh."):
                    _remove(os.path.join(os.path.dirname(path), base[4:]))
                elif m.isdir():
                    os.makedirs(path, exist_ok=True)
                elif m.issym():
                    os.symlink(m.linkname, path)
                elif m.islnk():
                    os.link(os.path.join(root, m.linkname), path)
                else:
                    data = tf.extractfile(m)
                    with open(path, "wb") as f:
                        f.write(data.read() if data else b"")
            except OSError:
                continue


def safe_unpack(root: Path, layer: ob.Layer) -> None:
    """tarfile's "data" filter: refuses anything that would leave the root."""
    with tarfile.open(fileobj=io.BytesIO(layer.tar), mode="r:") as tf:
        for m in tf.getmembers():
            try:
                tf.extract(m, root, filter="data")
            except (tarfile.FilterError, OSError, KeyError):
                continue


def _run(case_name: str, tmp_path: Path, unpack: Callable[[Path, ob.Layer], None]) -> tuple[MaliciousCase, Path]:
    outside = tmp_path / "outside"
    outside.mkdir()
    case = malicious_case(case_name, str(outside))
    root = tmp_path / "a" / "rootfs"
    root.mkdir(parents=True)
    case.prepare(root)
    assert case.violations(root) == []
    for layer in case.layers:
        unpack(root, layer)
    return case, root


@pytest.mark.parametrize("name", CASE_NAMES)
def test_malicious_case_escapes_a_naive_unpacker(name: str, tmp_path: Path) -> None:
    case, root = _run(name, tmp_path, naive_unpack)
    assert case.violations(root), f"{name} did not get out of a naive unpacker"


@pytest.mark.parametrize("name", CASE_NAMES)
def test_malicious_case_is_contained_by_a_safe_unpacker(name: str, tmp_path: Path) -> None:
    case, root = _run(name, tmp_path, safe_unpack)
    assert case.violations(root) == []


def test_malicious_image_is_pushable_shape() -> None:
    image = malicious_case("symlink-abs-two-layers").image()
    assert len(image.layers) == 3
    assert json.loads(image.config_bytes)["rootfs"]["diff_ids"][1] == image.layers[1].diff_id
