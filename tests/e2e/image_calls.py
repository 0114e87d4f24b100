"""The image e2e tests' calls and fixtures: a module's registry (docker-registry on loopback) and
daemon, CRI image calls in one line, what a daemon's store holds."""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess
from tests.support.registry import Registry

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
