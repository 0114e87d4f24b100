"""A private CNI network for e2e tests: its own bridge, subnet, host-local data
dir, conf dir, and a bin dir holding a deliberately slow bridge plugin."""

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

CNI_BIN = "/usr/lib/cni"


class Network:
    """A test CNI network: its own bridge, subnet, host-local data dir and conf dir."""

    def __init__(self, base: Path, index: int) -> None:
        self.dir = base
        self.bridge = f"cridt{secrets.token_hex(3)}"
        self.subnet_prefix = f"10.123.{index}"
        self.conf_dir = base / "net.d"
        self.ipam_dir = base / "ipam"
        self.bin_dir = base / "bin"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.bin_dir.mkdir(exist_ok=True)
        # a bridge plugin that first sleeps for as long as the file "delay" says
        slow = self.bin_dir / "slowbridge"
        slow.write_text(f'#!/bin/sh\nsleep "$(cat {base}/delay 2>/dev/null || echo 0)"\nexec {CNI_BIN}/bridge "$@"\n')
        slow.chmod(0o755)
        self.write()

    def conflist(self, bridge_type: str = "bridge") -> dict[str, Any]:
        return {
            "cniVersion": "1.0.0",
            "name": f"net-{self.bridge}",
            "plugins": [
                {
                    "type": bridge_type,
                    "bridge": self.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": f"{self.subnet_prefix}.0/24"}]],
                        "dataDir": str(self.ipam_dir),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }

    def write(self, bridge_type: str = "bridge") -> None:
        (self.conf_dir / "10-test.conflist").write_text(json.dumps(self.conflist(bridge_type)))

    def delay(self, seconds: float) -> None:
        (self.dir / "delay").write_text(str(seconds))

    def reservations(self) -> list[str]:
        """IPs host-local still holds."""
        d = self.ipam_dir / f"net-{self.bridge}"
        return sorted(p.name for p in d.glob("*") if p.name[0].isdigit()) if d.exists() else []

    def settings(self) -> dict[str, Any]:
        return {"cni": {"conf_dir": str(self.conf_dir), "bin_dirs": [str(self.bin_dir), CNI_BIN]}}

    def cleanup(self) -> None:
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
