"""Start and stop a real containerd (Debian's 1.6) on temporary dirs.

Everything it writes lives under its own dir: root, state, temp, the opt
plugin's path, the gRPC and ttrpc sockets, the runc root of its shims, the
CRI plugin's CNI config and registry config, pod netns mounts. It never
touches the host's /run/containerd, /var/lib/containerd or /opt/containerd
(one exception in containerd 1.6 itself: a shim, once a pod runs, puts its
socket under /run/containerd/s/; teardown removes those of its own shims).

Its pod network is a bridge of its own (``ctrdb<random>``) with host-local
IPAM in its dir and no masquerading; teardown deletes the bridge.
"""

import contextlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import psutil

from cri.api.v1 import api_pb2 as pb
from tests.support.daemon import DaemonProcess

BINARY = "/usr/bin/containerd"
CNI_BIN_DIR = "/usr/lib/cni"
# the harness passes the pause image it pushed to its local registry; this one is never pulled
SANDBOX_IMAGE = "127.0.0.1:5000/bench/pause:3.9"
SUBNET = "10.90.0.0/16"
STARTUP_TIMEOUT = 20.0
SHIM_SOCKET_DIR = Path("/run/containerd/s")

# plugins a CRI-only containerd on this machine does not need
DISABLED_PLUGINS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def _q(value: str) -> str:
    """A TOML basic string."""
    return json.dumps(value)


def cni_conflist(name: str, bridge: str, subnet: str, ipam_dir: str) -> dict[str, object]:
    """The pod network of the benchmarks: a bridge with host-local IPAM (state in ``ipam_dir``) and
    port mappings, no masquerading (the pods talk to nothing outside)."""
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": ipam_dir,
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


# brings lo up in the pod's netns; containerd loads only the first config file
# (max_conf_num = 1) and brings lo up by itself with the same plugin
LOOPBACK_CONF = {"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}


class ContainerdProcess(DaemonProcess):
    """One containerd daemon run as a subprocess, configured for CRI with runc and cgroupfs."""

    def __init__(
        self,
        base: Path,
        name: str = "containerd",
        *,
        binary: str = BINARY,
        sandbox_image: str = SANDBOX_IMAGE,
        subnet: str = SUBNET,
        bridge: str | None = None,
        log_level: str = "info",
    ) -> None:
        super().__init__()
        self.dir = base / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.binary = binary
        self.socket = str(self.dir / "containerd.sock")
        self.ttrpc_socket = str(self.dir / "containerd.sock.ttrpc")
        self.root = self.dir / "root"
        self.state = self.dir / "state"
        self.runc_root = self.dir / "runc"  # the shims' runc --root is <this>/<namespace>
        self.cni_conf_dir = self.dir / "net.d"
        self.config_path = self.dir / "config.toml"
        self.log_path = self.dir / "containerd.log"
        self.sandbox_image = sandbox_image
        self.subnet = subnet
        self.log_level = log_level
        self.bridge = bridge or "ctrdb" + secrets.token_hex(3)
        self.registry_config_dir = self.dir / "certs.d"  # <host:port>/hosts.toml
        self.content_dir = self.root / "io.containerd.content.v1.content" / "blobs" / "sha256"
        self.snapshots_dir = self.root / "io.containerd.snapshotter.v1.overlayfs" / "snapshots"
        self.proc: subprocess.Popen[bytes] | None = None
        self._bridge_existed = False
        self._run_dir_existed = True

    def config_toml(self) -> str:
        d = self.dir
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        ctd = '[plugins."io.containerd.grpc.v1.cri".containerd]'
        runc = '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]'
        lines = [
            "# written by crid's benchmarks: a CRI-only containerd on temporary dirs",
            "version = 2",
            f"root = {_q(str(self.root))}",
            f"state = {_q(str(self.state))}",
            f"temp = {_q(str(d / 'tmp'))}",
            f"disabled_plugins = {json.dumps(DISABLED_PLUGINS)}",
            'required_plugins = ["io.containerd.grpc.v1.cri"]',
            "",
            "[grpc]",
            f"  address = {_q(self.socket)}",
            "[ttrpc]",
            f"  address = {_q(self.ttrpc_socket)}",
            "[debug]",
            f"  level = {_q(self.log_level)}",
            "[metrics]",
            '  address = ""',
            "",
            '[plugins."io.containerd.internal.v1.opt"]',
            f"  path = {_q(str(d / 'opt'))}",
            '[plugins."io.containerd.runtime.v1.linux"]',
            f"  runtime_root = {_q(str(d / 'runc-v1'))}",
            # the CRI plugin's own root and state are <root>/<state>/io.containerd.grpc.v1.cri
            cri,
            f"  sandbox_image = {_q(self.sandbox_image)}",
            '  stream_server_address = "127.0.0.1"',
            '  stream_server_port = "0"',
            "  systemd_cgroup = false",
            "  netns_mounts_under_state_dir = true",
            "  disable_tcp_service = true",
            # the pause container asks for oom_score_adj -998; where lowering it is not allowed (as on
            # the benchmark VM) runc fails: clamp it to containerd's own, as crid clamps to its own
            "  restrict_oom_score_adj = true",
            '[plugins."io.containerd.grpc.v1.cri".cni]',
            f"  bin_dir = {_q(CNI_BIN_DIR)}",
            f"  conf_dir = {_q(str(self.cni_conf_dir))}",
            "  max_conf_num = 1",
            '[plugins."io.containerd.grpc.v1.cri".registry]',
            f"  config_path = {_q(str(self.registry_config_dir))}",
            ctd,
            '  default_runtime_name = "runc"',
            '  snapshotter = "overlayfs"',
            runc,
            '  runtime_type = "io.containerd.runc.v2"',
            '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]',
            '  BinaryName = "runc"',
            f"  Root = {_q(str(self.runc_root))}",
            "  SystemdCgroup = false",
            "",
        ]
        return "\n".join(lines)

    def write_files(self) -> None:
        for sub in ("tmp", "opt", "certs.d", "net.d"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.config_path.write_text(self.config_toml())
        conflist = cni_conflist("crid-bench", self.bridge, self.subnet, str(self.dir / "cni-ipam"))
        (self.cni_conf_dir / "10-crid-bench.conflist").write_text(json.dumps(conflist, indent=2) + "\n")
        (self.cni_conf_dir / "99-loopback.conf").write_text(json.dumps(LOOPBACK_CONF, indent=2) + "\n")

    def command(self) -> list[str]:
        return [self.binary, "--config", str(self.config_path)]

    def start(self) -> "ContainerdProcess":
        self.write_files()
        self._bridge_existed = os.path.exists(f"/sys/class/net/{self.bridge}")
        self._run_dir_existed = SHIM_SOCKET_DIR.parent.exists()
        proc = self._spawn()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                code = proc.returncode
                raise RuntimeError(f"containerd exited with {code} at startup:\n{self.log_text()}")
            if os.path.exists(self.socket):
                try:
                    self.client.runtime.Version(pb.VersionRequest(), timeout=2)
                    return self
                except Exception as exc:  # not serving CRI yet
                    last = str(exc)
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"containerd did not answer CRI Version within {STARTUP_TIMEOUT}s ({last})")

    def _spawn(self) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            # its own session: a Ctrl-C on the terminal reaches the harness, which stops it in order
            self.proc = subprocess.Popen(
                self.command(), stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        return self.proc

    def restart(self, timeout: float = 30.0) -> float:
        """SIGTERM containerd alone (its shims and containers keep running), start it again
        without waiting; returns the time.perf_counter() of the start."""
        self.close_client()
        assert self.proc is not None, "containerd not started"
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout)
        started = time.perf_counter()
        self._spawn()
        return started

    @property
    def pid(self) -> int:
        assert self.proc is not None, "containerd not started"
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, SIGKILL after ``timeout``, then remove whatever its shims left; returns the exit code."""
        self.close_client()
        code: int | None = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            code = self.proc.returncode
        self.cleanup()
        return code

    def cleanup(self) -> None:
        """Kill leftover shims and containers, unmount, remove the bridge: after containerd is gone."""
        addresses = self.state.glob("io.containerd.runtime.v2.task/*/*/address")
        shim_sockets = [f.read_text().strip() for f in addresses]
        kill_processes_mentioning(str(self.dir))
        for root in sorted(self.runc_root.glob("*")) if self.runc_root.is_dir() else []:
            delete_oci_containers("runc", root)
        unmount_under(self.dir)
        for address in shim_sockets:
            # a 1.6 shim's socket: unix:///run/containerd/s/<hash>, whatever containerd's state dir is
            path = Path(address.removeprefix("unix://"))
            if path.parent == SHIM_SOCKET_DIR:
                path.unlink(missing_ok=True)
        if not self._run_dir_existed:
            for d in (SHIM_SOCKET_DIR, SHIM_SOCKET_DIR.parent):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only if empty
        if not self._bridge_existed and os.path.exists(f"/sys/class/net/{self.bridge}"):
            subprocess.run(["ip", "link", "del", self.bridge], check=False, capture_output=True)


def kill_processes_mentioning(text: str) -> None:
    """SIGKILL every process (but this one) whose command line contains ``text``."""
    me = os.getpid()
    victims = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmdline: list[str] = p.info["cmdline"] or []
        if p.info["pid"] != me and any(text in arg for arg in cmdline):
            victims.append(p)
    for p in victims:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(victims, timeout=5)


def delete_oci_containers(binary: str, root: Path) -> None:
    """``BINARY --root ROOT delete --force`` every container it still knows."""
    listing = subprocess.run([binary, "--root", str(root), "list", "-q"], capture_output=True, text=True)
    for cid in listing.stdout.split():
        subprocess.run([binary, "--root", str(root), "delete", "--force", cid], capture_output=True)


def unmount_under(path: Path) -> None:
    """Lazily unmount every mount point at or below ``path``, deepest first."""
    prefix = str(path)
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    for point in sorted(set(points), key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)
