"""Pull metrics of a real crid, read from its /metrics: per-pull progress while
a pull runs (through a bandwidth-limited proxy), downloaded and skipped bytes,
layers by source, outcomes."""

import os
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
from tests.support.prometheus import Samples, sample, scrape
from tests.support.proxy import SlowProxy
from tests.support.registry import Registry


@pytest.fixture(scope="module")
def registry(e2e_base: Path) -> Iterator[Registry]:
    with Registry(Path(tempfile.mkdtemp(prefix="reg", dir=e2e_base))) as reg:
        yield reg


def pull(d: CridProcess, ref: str) -> str:
    return str(d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60).image_ref)


def counters(s: Samples) -> dict[str, float]:
    names = ("crid_image_pull_downloaded_bytes_total", "crid_image_pull_skipped_bytes_total")
    out = {n: sample(s, n) or 0.0 for n in names}
    for source in ("registry", "content_store", "snapshot"):
        out[source] = sample(s, "crid_image_pull_layers_total", source=source) or 0.0
    for outcome in ("success", "error", "cancelled"):
        out[outcome] = sample(s, "crid_image_pulls_total", outcome=outcome) or 0.0
    return out


def progress_of(s: Samples, image: str) -> tuple[float, float] | None:
    done = sample(s, "crid_image_pull_progress_bytes", image=image)
    size = sample(s, "crid_image_pull_size_bytes", image=image)
    return None if done is None or size is None else (done, size)


def test_pull_progress_and_byte_counts(registry: Registry, daemons: Daemons) -> None:
    big = ob.Layer([ob.File("big", os.urandom(6 << 20))], "none")
    img = ob.busybox_image("gzip", extra_layers=[big])
    registry.push("e2e/progress", "v1", img)
    ref = f"{registry.host}/e2e/progress:v1"
    size = len(img.config_bytes) + sum(lay.size for lay in img.layers)
    with SlowProxy(registry.host, bytes_per_second=3 << 20) as proxy:
        d = daemons.start()
        hosts = Path(d.config.images.registry_config_dir) / registry.host
        hosts.mkdir(parents=True)
        (hosts / "hosts.toml").write_text(f'server = "http://{proxy.host}"\n')
        before = counters(scrape(d.metrics_address))
        assert before["success"] == 0 and sample(scrape(d.metrics_address), "crid_image_pulls_in_flight") == 0

        t = threading.Thread(target=pull, args=(d, ref))
        t.start()
        seen: list[tuple[float, float]] = []
        in_flight = 0.0
        while t.is_alive():
            s = scrape(d.metrics_address)
            p = progress_of(s, ref)
            if p is not None:
                seen.append(p)
                in_flight = max(in_flight, sample(s, "crid_image_pulls_in_flight") or 0)
            time.sleep(0.05)
        t.join()

    # the series existed while the pull ran, with the image's size, and moved forward
    assert len(seen) >= 5, seen
    assert in_flight == 1
    assert {sz for _, sz in seen if sz} == {size}
    done = [dn for dn, _ in seen]
    assert done == sorted(done), "progress went backwards"
    assert any(0 < dn < size for dn in done), f"no intermediate progress: {seen}"
    after = scrape(d.metrics_address)
    assert progress_of(after, ref) is None, "the series outlived its pull"
    delta = {k: v - before[k] for k, v in counters(after).items()}
    assert delta["success"] == 1 and delta["error"] == 0
    assert delta["registry"] == len(img.layers) and delta["content_store"] == delta["snapshot"] == 0
    manifest = len(img.manifest_bytes)
    assert delta["crid_image_pull_downloaded_bytes_total"] == size + manifest
    assert delta["crid_image_pull_skipped_bytes_total"] == 0
    assert sample(after, "crid_image_pull_duration_seconds_count") == 1

    # pulled again, straight from the registry (the proxy is gone; a kept-alive connection to it must
    # not be what the test relies on): every layer is reused as unpacked, only the manifest is downloaded
    (hosts / "hosts.toml").write_text(f'server = "http://{registry.host}"\n')
    pull(d, ref)
    again = {k: v - counters(after)[k] for k, v in counters(scrape(d.metrics_address)).items()}
    assert again["snapshot"] == len(img.layers) and again["registry"] == 0
    assert again["crid_image_pull_skipped_bytes_total"] == size
    assert again["crid_image_pull_downloaded_bytes_total"] == manifest
    assert again["success"] == 1


def test_failed_pull_counts_as_error(registry: Registry, daemons: Daemons) -> None:
    d = daemons.start()
    before = counters(scrape(d.metrics_address))
    with pytest.raises(grpc.RpcError):
        pull(d, f"{registry.host}/e2e/does-not-exist:v1")
    after = scrape(d.metrics_address)
    assert counters(after)["error"] == before["error"] + 1
    assert sample(after, "crid_image_pulls_in_flight") == 0
    assert not [k for k in after if k[0] == "crid_image_pull_progress_bytes"]
