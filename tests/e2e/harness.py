"""Start and stop real crid daemons for the e2e tests.

Each daemon gets its own socket, root, state dir and config file under a
base directory, so several can run side by side; its stderr (JSON logs) is
kept in a file and echoed when a test fails.
"""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cri import config as configmod
from cri.api.v1 import api_pb2 as pb
from tests.e2e import leaks
from tests.support.daemon import DaemonProcess, deep_merge

STARTUP_TIMEOUT = 20.0
# files and directories of pods and containers that outlived them, found when a daemon stopped
LEFTOVERS: list[str] = []


class CridProcess(DaemonProcess):
    """One crid daemon run as a subprocess (``python -m cri serve``)."""

    def __init__(
        self,
        base: Path,
        name: str = "crid",
        settings: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.env = dict(env or {})  # extra environment of the daemon (e.g. a fault to inject)
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(self.dir / "crid.sock")
        self.root = str(self.dir / "root")
        self.state = str(self.dir / "state")
        self.config_path = self.dir / "config.toml"
        self.log_path = self.dir / "crid.log"
        defaults: dict[str, Any] = {
            "root_dir": self.root,
            "state_dir": self.state,
            "grpc": {"socket": self.socket, "shutdown_grace_seconds": 5.0},
            "log": {"level": "debug", "format": "json"},
            "metrics": {"address": "127.0.0.1:0"},
            "images": {"registry_config_dir": str(self.dir / "certs.d")},
            "cni": {"conf_dir": str(self.dir / "net.d")},
        }
        self.config = configmod.from_dict(deep_merge(defaults, settings or {}), "test settings")
        self.config_path.write_text(configmod.render(self.config))
        self.proc: subprocess.Popen[bytes] | None = None
        self.metrics_address = ""

    def command(self) -> list[str]:
        return [sys.executable, "-m", "cri", "serve", "--config", str(self.config_path)]

    def start(self) -> "CridProcess":
        with open(self.log_path, "ab") as log:
            env = {**os.environ, **self.env} if self.env else None
            self.proc = subprocess.Popen(self.command(), stderr=log, stdout=log, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            started = self.log_records("crid started")
            if started and started[-1]["pid"] == self.proc.pid:
                self.metrics_address = started[-1]["metrics"]
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"crid exited with {self.proc.returncode} at startup:\n{self.log_text()}")
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"crid did not start within {STARTUP_TIMEOUT}s:\n{self.log_text()}")

    def log_records(self, msg: str | None = None) -> list[dict[str, Any]]:
        records = []
        for line in self.log_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (msg is None or record.get("msg") == msg):
                records.append(record)
        return records

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Signal the daemon and wait; returns its exit code. Before a graceful
        stop, files crid left of pods and containers it no longer knows are
        recorded in LEFTOVERS (the e2e leak check fails the module on them)."""
        graceful = sig != signal.SIGKILL and self.proc is not None and self.proc.poll() is None
        self.close_client()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        if graceful:
            self._record_leftovers()
        return code

    def _record_leftovers(self) -> None:
        """After a graceful stop, the records in crid's database are what it
        still has (a pod RunPodSandbox finished during the shutdown included)."""
        db = Path(self.root) / "metadata.db"
        if not db.exists():
            return
        try:
            with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                live = {row[0] for t in ("sandboxes", "containers") for row in conn.execute(f"SELECT id FROM {t}")}
        except sqlite3.Error:
            return  # a daemon that never got as far as its tables
        LEFTOVERS.extend(f"{self.dir}: {path}" for path in leaks.daemon_leftovers(self.root, self.state, live))

    def remove_all_pods(self) -> None:
        """Stop and remove every pod the daemon has (a module fixture's teardown)."""
        for p in self.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items:
            self.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=p.id))
            self.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=p.id))

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop(signal.SIGKILL)


def run_crid(args: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a crid CLI command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "cri", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def is_root() -> bool:
    return os.geteuid() == 0
