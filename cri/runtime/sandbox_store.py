"""Pod sandbox records (see records.py for the table).

A row is written (state ``creating``) before RunPodSandbox touches the
system and updated after each step that leaves something to undo, so that
startup recovery knows what a killed daemon left behind.
"""

import secrets
import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.runtime.records import RecordTable
from cri.store import Store


class State(StrEnum):
    CREATING = "creating"  # RunPodSandbox in progress (never reported as such)
    READY = "ready"
    NOTREADY = "notready"


@dataclass
class Sandbox:
    id: str
    name: str
    fingerprint: str
    handler: str
    state: State
    created_at: int
    config: pb.PodSandboxConfig
    # what exists on the system, for status and for cleanup
    namespaces: dict[str, str] = field(default_factory=dict)  # kind -> pinned file
    ips: list[str] = field(default_factory=list)
    infra_pid: int = 0
    infra_start: int = 0  # the infra process's start time: tells it from a reused pid
    cgroups: list[str] = field(default_factory=list)  # directories crid created
    network_added: bool = False
    shm: str = ""
    # UpdatePodSandboxResources: {"overhead", "resources"} as hex LinuxContainerResources
    pod_resources: dict[str, str] = field(default_factory=dict)

    @property
    def state_value(self) -> str:
        return self.state.value

    @property
    def owner(self) -> str:
        return self.handler

    def config_bytes(self) -> bytes:
        return self.config.SerializeToString()

    def data(self) -> dict[str, Any]:
        return {
            "namespaces": self.namespaces,
            "ips": self.ips,
            "infra_pid": self.infra_pid,
            "infra_start": self.infra_start,
            "cgroups": self.cgroups,
            "network_added": self.network_added,
            "shm": self.shm,
            "pod_resources": self.pod_resources,
        }


def new_id() -> str:
    return secrets.token_hex(32)


def _load(r: sqlite3.Row, data: dict[str, Any]) -> Sandbox:
    return Sandbox(
        id=r["id"],
        name=r["name"],
        fingerprint=r["fingerprint"],
        handler=r["handler"],
        state=State(r["state"]),
        created_at=r["created_at"],
        config=pb.PodSandboxConfig.FromString(r["config"]),
        namespaces=data.get("namespaces", {}),
        ips=data.get("ips", []),
        infra_pid=data.get("infra_pid", 0),
        infra_start=data.get("infra_start", 0),
        cgroups=data.get("cgroups", []),
        network_added=data.get("network_added", False),
        shm=data.get("shm", ""),
        pod_resources=data.get("pod_resources", {}),
    )


class SandboxStore(RecordTable[Sandbox]):
    def __init__(self, store: Store) -> None:
        super().__init__(store, "sandboxes", "handler", "pod sandbox", _load)

    def matching(self, filt: pb.PodSandboxFilter | None) -> list[Sandbox]:
        """Pods matching a ListPodSandbox filter (ids by prefix); those being created are never listed."""
        out = []
        for sb in self.by_id.values():
            if sb.state == State.CREATING:
                continue
            if filt is not None:
                if filt.id and not sb.id.startswith(filt.id):
                    continue
                if filt.HasField("state") and (filt.state.state == pb.SANDBOX_READY) != (sb.state == State.READY):
                    continue
                labels = sb.config.labels
                if any(labels.get(k) != v for k, v in filt.label_selector.items()):
                    continue
            out.append(sb)
        return out
