"""A real Prometheus (Debian's ``prometheus`` package) for tests, and crid's
/metrics read directly.

:class:`Prometheus` runs ``prometheus`` on a free loopback port with a config
and a TSDB of its own under a work dir (never /var/lib/prometheus, never the
package's system instance), scraping the given targets every second and
evaluating the given rule files every second. ``query`` runs PromQL through
the HTTP API; ``stop()`` terminates it and waits.

    with Prometheus(tmp / "prom", [crid.metrics_address]) as prom:
        prom.wait_for('up{job="crid"}', lambda v: v == 1)
"""

import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

from prometheus_client.parser import text_string_to_metric_families

from tests.support.daemon import free_port, start_on_a_free_port

PROMETHEUS_BINARY = "/usr/bin/prometheus"
PROMTOOL_BINARY = "/usr/bin/promtool"
STARTUP_TIMEOUT = 30.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(address: str) -> Samples:
    """Every sample of crid's /metrics at ``address`` (HOST:PORT)."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL_BINARY, *args], capture_output=True, text=True, timeout=60)


class Prometheus:
    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        rule_files: Sequence[Path] = (),
        job: str = "crid",
        binary: str = PROMETHEUS_BINARY,
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.targets = list(targets)
        self.rule_files = [str(p) for p in rule_files]
        self.job = job
        self.binary = binary
        self.config_path = workdir / "prometheus.yml"
        self.data_dir = workdir / "data"
        self.log_path = workdir / "prometheus.log"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": self.rule_files,
            "scrape_configs": [{"job_name": self.job, "static_configs": [{"targets": self.targets}]}],
        }

    def start(self) -> Self:
        start_on_a_free_port(
            self._start_once, self.stop, lambda: f"prometheus could not get a free port:\n{self.log_text()}"
        )
        return self

    def _start_once(self) -> bool:
        self.port = free_port()
        self.data_dir.mkdir(exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))  # JSON is YAML
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_path}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log_text()[log_start:]
                self.proc = None
                if "address already in use" in text:
                    return False
                raise RuntimeError(f"prometheus exited at startup:\n{text}")
            if self._ready():
                return True
            time.sleep(0.1)
        raise RuntimeError(f"prometheus was not ready within {STARTUP_TIMEOUT}s:\n{self.log_text()}")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (OSError, urllib.error.HTTPError):
            return False

    def stop(self) -> None:
        """TERM (KILL after 10 s), and reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ------------------------------------------------------------ the HTTP API

    def api(self, path: str, **params: str) -> Any:
        """``data`` of an API answer; raises with Prometheus's error otherwise."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.load(r)
        except urllib.error.HTTPError as e:
            doc = json.load(e)
        if doc.get("status") != "success":
            raise AssertionError(f"prometheus refused {path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one element) for ``promql`` now."""
        data = self.api("query", query=promql)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, promql: str) -> float | None:
        """The single value of ``promql``; None when the vector is empty."""
        result = self.query(promql)
        if not result:
            return None
        assert len(result) == 1, f"{promql} has {len(result)} series: {result}"
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, ok: Callable[[float | None], bool], timeout: float = 20.0) -> float | None:
        """Poll ``promql`` until ``ok`` accepts its value; returns that value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.value(promql)
            if ok(v):
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"{promql} is still {v} after {timeout}s")
            time.sleep(0.25)
