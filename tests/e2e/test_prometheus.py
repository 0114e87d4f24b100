"""crid scraped by a real Prometheus (Debian's package), with the shipped alerts loaded.

One registry, one crid with a private CNI network, and one Prometheus on a
free loopback port with its own config and TSDB under the e2e base, scraping
crid every second. The test pulls an image, runs pods and containers
(one OOM-killed), execs through the streaming server, and then asks
Prometheus's HTTP API, in PromQL, what it saw. promtool checks the shipped
rules and scrape config and runs the rules' unit test.
"""

import re
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.container_pod import Pod
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support import stream_clients as sc
from tests.support.cni_net import Network
from tests.support.prometheus import Prometheus, promtool
from tests.support.registry import Registry
from tests.unit.test_metrics_doc import dashboard_exprs, documented, rule_exprs

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "manifests" / "prometheus-rules.yaml"
SCRAPE_CONFIG = ROOT / "manifests" / "prometheus-scrape.yaml"
RULES_TEST = Path(__file__).with_name("prometheus_rules_test.yaml")
PODS = 3
NETWORK_INDEX = 230  # 10.123.230.0/24
# series that exist only while a pull is under way
TRANSIENT = {"crid_image_pull_progress_bytes", "crid_image_pull_size_bytes"}
# labelled series that appear with the first streaming session
AFTER_A_SESSION = {"crid_streaming_sessions_total", "crid_streaming_bytes_total"}


@dataclass
class Stack:
    crid: CridProcess
    prom: Prometheus
    registry: Registry
    image: ob.Image
    ref: str


@pytest.fixture(scope="module")
def stack(e2e_base: Path) -> Iterator[Stack]:
    base = Path(tempfile.mkdtemp(prefix="prom", dir=e2e_base))
    network = Network(base / "net", NETWORK_INDEX)
    image = ob.busybox_image("gzip", extra_files={"prometheus": b"1"})
    try:
        with Registry(base / "reg") as registry:
            registry.push("e2e/prom", "v1", image)
            d = CridProcess(base, settings=network.settings()).start()
            try:
                with Prometheus(base / "prometheus", [d.metrics_address], rule_files=[RULES]) as prom:
                    yield Stack(d, prom, registry, image, f"{registry.host}/e2e/prom:v1")
            finally:
                d.remove_all_pods()
                d.stop()
    finally:
        network.cleanup()


def test_promtool_accepts_the_shipped_rules_and_config() -> None:
    rules = promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert re.search(r"SUCCESS: (\d+) rules found", rules.stdout), rules.stdout
    config = promtool("check", "config", str(SCRAPE_CONFIG))  # a full config: it loads the rules file too
    assert config.returncode == 0, config.stdout + config.stderr
    assert "1 rule files found" in config.stdout


def test_the_alerts_fire_as_their_unit_test_says() -> None:
    run = promtool("test", "rules", str(RULES_TEST))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def _scraped(prom: Prometheus, promql: str, want: float, timeout: float = 20.0) -> None:
    prom.wait_for(promql, lambda v: v is not None and v >= want, timeout)


def _equals(prom: Prometheus, promql: str, want: float, timeout: float = 20.0) -> None:
    """``promql`` comes to equal ``want`` (scrapes lag the RPCs by up to a second)."""
    prom.wait_for(promql, lambda v: v == want, timeout)


def test_prometheus_sees_a_workload_through_crids_metrics(stack: Stack) -> None:
    d, prom = stack.crid, stack.prom
    prom.wait_for('up{job="crid"}', lambda v: v == 1)
    success = 'crid_image_pulls_total{job="crid", outcome="success"}'
    pulls_before = prom.value(success)
    assert pulls_before is not None  # the series exists at 0 before the first pull
    # everything else is there from the start too, or a first increment would show no increase()
    assert_every_documented_metric_is_ingested(prom, TRANSIENT | AFTER_A_SESSION)

    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=stack.ref)), timeout=60)
    _scraped(prom, success, pulls_before + 1)
    assert prom.value(success) == pulls_before + 1
    layers = sum(lay.size for lay in stack.image.layers)
    _scraped(prom, "crid_image_pull_downloaded_bytes_total", layers + len(stack.image.config_bytes))
    _equals(prom, 'crid_image_pull_layers_total{source="registry"}', len(stack.image.layers))
    _equals(prom, "crid_image_pull_duration_seconds_count", pulls_before + 1)

    pods = [Pod(d, stack.ref, f"prom{i}") for i in range(PODS)]
    running = [p.run("sleeper", ["sleep", "600"]) for p in pods]
    done = pods[0].wait(pods[0].run("done", ["true"]))
    assert done.reason == "Completed"
    res = pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(memory_limit_in_bytes=32 << 20))
    oom = pods[1].wait(pods[1].run("oom", ["dd", "if=/dev/zero", "of=/dev/shm/fill", "bs=1M", "count=60"], linux=res))
    assert oom.reason == "OOMKilled"
    url = d.client.runtime.Exec(pb.ExecRequest(container_id=running[0], cmd=["echo", "hi"], stdout=True)).url
    assert sc.k8s_exec(str(url), "v5.channel.k8s.io").stdout == "hi\n"
    streamed = [i.id for r in d.client.image.StreamImages(pb.StreamImagesRequest()) for i in r.images]
    assert streamed == [i.id for i in d.client.image.ListImages(pb.ListImagesRequest()).images]

    _equals(prom, 'crid_operations_total{operation="RunPodSandbox", code="OK"}', PODS)
    _equals(prom, 'crid_containers{state="running"}', PODS)
    _equals(prom, 'crid_containers{state="exited"}', 2)
    _equals(prom, 'crid_pods{state="ready"}', PODS)
    _equals(prom, 'crid_operations_total{operation="StreamImages", code="OK"}', 1)
    _equals(prom, 'crid_container_exits_total{reason="Completed"}', 1)
    _equals(prom, 'crid_container_exits_total{reason="OOMKilled"}', 1)
    _equals(prom, "crid_container_oom_kills_total", 1)
    _equals(prom, 'crid_cni_operation_duration_seconds_count{operation="ADD"}', PODS)
    _equals(prom, 'crid_cni_operation_failures_total{operation="ADD"}', 0)
    _scraped(prom, 'crid_streaming_sessions_total{kind="exec", transport="websocket", outcome="ok"}', 1)
    _equals(prom, 'crid_streaming_bytes_total{kind="exec", direction="out"}', len(b"hi\n"))
    _equals(prom, 'crid_streaming_sessions_active{kind="exec"}', 0)
    _equals(prom, 'crid_runtime_condition{condition="RuntimeReady"}', 1)
    _equals(prom, 'crid_runtime_condition{condition="NetworkReady"}', 1)
    _equals(prom, 'crid_operations_in_flight{operation="RunPodSandbox"}', 0)
    # the latency histogram answers quantiles: RunPodSandbox took between 1 ms and a minute
    buckets = 'crid_operation_duration_seconds_bucket{operation="RunPodSandbox"}'
    p99 = prom.value(f"histogram_quantile(0.99, sum by (le) (rate({buckets}[5m])))")
    assert p99 is not None and 0.001 <= p99 <= 60

    # the OOM kill fires the shipped alert (no `for`), in this very Prometheus
    deadline = time.monotonic() + 20
    while not any(a["labels"]["alertname"] == "CridContainerOOMKilled" for a in firing(prom)):
        assert time.monotonic() < deadline, f"CridContainerOOMKilled never fired: {prom.api('alerts')}"
        time.sleep(0.25)
    assert {a["labels"]["alertname"] for a in firing(prom)} == {"CridContainerOOMKilled"}

    assert_every_documented_metric_is_ingested(prom, TRANSIENT)

    for p in pods:
        p.remove()
    _scraped(prom, 'crid_cni_operation_duration_seconds_count{operation="DEL"}', PODS)
    prom.wait_for('crid_pods{state="ready"}', lambda v: v == 0)
    prom.wait_for('sum(crid_containers{job="crid"})', lambda v: v == 0)


def firing(prom: Prometheus) -> list[dict[str, dict[str, str]]]:
    return [a for a in prom.api("alerts")["alerts"] if a["state"] == "firing"]


def test_the_shipped_rules_load_and_evaluate(stack: Stack) -> None:
    groups = stack.prom.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(rule_exprs()) > 0
    deadline = time.monotonic() + 10
    while any(r.get("health") != "ok" for r in rules):  # evaluated at least once, without error
        assert time.monotonic() < deadline, [(r["name"], r.get("health"), r.get("lastError")) for r in rules]
        time.sleep(0.25)
        rules = [r for g in stack.prom.api("rules")["groups"] for r in g["rules"]]


def test_every_dashboard_query_runs(stack: Stack) -> None:
    stack.prom.wait_for('up{job="crid"}', lambda v: v == 1)
    for expr in dashboard_exprs():
        promql = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
        stack.prom.query(promql)  # raises with Prometheus's parse or evaluation error


def assert_every_documented_metric_is_ingested(prom: Prometheus, absent: set[str]) -> None:
    """What the doc lists is what crid exports and Prometheus ingests."""
    series = prom.query('count by (__name__) ({job="crid", __name__=~"crid_.*"})')
    names = {re.sub(r"_(bucket|count|sum)$", "", s["metric"]["__name__"]) for s in series}
    missing = sorted(set(documented()) - absent - names)
    assert not missing, f"documented, but no series in Prometheus: {missing}"
    assert not names - set(documented()), f"in Prometheus, not documented: {sorted(names - set(documented()))}"
