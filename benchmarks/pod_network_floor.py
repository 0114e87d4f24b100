"""The floor of a pod's network, no CRI daemon: what RunPodSandbox and
StopPodSandbox cannot do without, done by hand with the standard tools.

Set up: ``ip netns add`` (iproute2 makes and pins the namespace), then CNI
ADD of loopback, then of the benchmark's own conflist (bridge with host-local
IPAM, then portmap given the bridge's result), each plugin exec'ed as a
runtime execs it. Torn down: CNI DEL in the reverse order, then ``ip netns
delete``. The network is one of its own (its bridge, a free /16, its IPAM
state in the workload's dir), so that it takes no address of the runtime's
pods; the host it runs on is the runtime's, with its pods beside it. Its
IPAM dir is given as many allocations as the runtime has pods (``fill``):
host-local reads every allocation of its network at each ADD and DEL, a
cost that grows with the pods.
"""

import ipaddress
import json
import os
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import commands
from benchmarks.containerd import CNI_BIN_DIR, LOOPBACK_CONF, cni_conflist
from benchmarks.host_setup import delete_link, free_subnets

IFNAME = "eth0"
TIMEOUT = 30.0


class NetworkFloor:
    def __init__(self, workdir: Path) -> None:
        self.bridge = "flrb" + secrets.token_hex(3)
        self.subnet = free_subnets(1)[0]
        self.conflist = cni_conflist("floor", self.bridge, self.subnet, str(workdir / "floor-ipam"))
        self.allocations = workdir / "floor-ipam" / str(self.conflist["name"])  # host-local's dir for the network
        self.names: list[str] = []  # namespaces made and not deleted yet

    def fill(self, pods: int) -> None:
        """At least ``pods`` allocations in the IPAM dir besides the floor's own, as host-local writes
        them (a file named by the address, holding the container id and the interface), at the top
        of the subnet, where the floor's own sequential allocations never reach."""
        self.allocations.mkdir(parents=True, exist_ok=True)
        top = ipaddress.IPv4Network(self.subnet).broadcast_address
        for i in range(pods):
            path = self.allocations / str(top - 1 - i)
            if not path.exists():
                path.write_text(f"floor-filler-{i}\r\n{IFNAME}")

    def _plugin(self, command: str, conf: dict[str, Any], name: str) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": name,
            "CNI_NETNS": f"/run/netns/{name}",
            "CNI_IFNAME": IFNAME,
            "CNI_PATH": CNI_BIN_DIR,
        }
        binary = os.path.join(CNI_BIN_DIR, conf["type"])
        done = commands.run([binary], TIMEOUT, input=json.dumps(conf).encode(), env=env, capture_output=True)
        if done.returncode != 0:
            raise RuntimeError(f"CNI {command} of {conf['type']} failed: {done.stdout.decode(errors='replace')}")
        return json.loads(done.stdout) if command == "ADD" and done.stdout.strip() else {}

    def _confs(self) -> list[dict[str, Any]]:
        """Each plugin's own config, as a runtime builds it from the conflist."""
        top = {"cniVersion": self.conflist["cniVersion"], "name": self.conflist["name"]}
        plugins: list[dict[str, Any]] = self.conflist["plugins"]  # type: ignore[assignment]
        return [{**top, **plugin} for plugin in plugins]

    def add(self, name: str) -> float:
        """Seconds to make the namespace and ADD its network."""
        t0 = time.perf_counter()
        commands.run(["ip", "netns", "add", name], TIMEOUT, check=True, capture_output=True)
        self.names.append(name)
        self._plugin("ADD", dict(LOOPBACK_CONF), name)
        result: dict[str, Any] = {}
        for conf in self._confs():
            result = self._plugin("ADD", {**conf, "prevResult": result} if result else conf, name)
        return time.perf_counter() - t0

    def delete(self, name: str) -> float:
        """Seconds to DEL the network and delete the namespace."""
        t0 = time.perf_counter()
        for conf in reversed(self._confs()):
            self._plugin("DEL", conf, name)
        self._plugin("DEL", dict(LOOPBACK_CONF), name)
        commands.run(["ip", "netns", "delete", name], TIMEOUT, check=True, capture_output=True)
        self.names.remove(name)
        return time.perf_counter() - t0

    def clean(self) -> None:
        """What an interrupted measurement left: its namespaces, their addresses, the bridge."""
        for name in list(self.names):
            try:
                self.delete(name)
            except (RuntimeError, subprocess.SubprocessError):
                subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=TIMEOUT)
                self.names.remove(name)
        delete_link(self.bridge)
