"""Pod sandbox records: the SQLite table and the in-memory view served to reads.

A row is written (state ``creating``) before RunPodSandbox touches the
system and updated after each step that leaves something to undo, so that
startup recovery knows what a killed daemon left behind.
"""

import json
import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import NotFound
from cri.store import Store

MIGRATIONS = [
    """
    CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE NOT NULL,
        fingerprint TEXT NOT NULL,
        handler TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        config BLOB NOT NULL,
        data TEXT NOT NULL
    )
    """,
]


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
    cgroups: list[str] = field(default_factory=list)  # directories crid created
    network_added: bool = False
    shm: str = ""

    def data(self) -> dict[str, Any]:
        return {
            "namespaces": self.namespaces,
            "ips": self.ips,
            "infra_pid": self.infra_pid,
            "cgroups": self.cgroups,
            "network_added": self.network_added,
            "shm": self.shm,
        }


def new_id() -> str:
    return secrets.token_hex(32)


class SandboxStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("sandboxes", MIGRATIONS)
        self.by_id: dict[str, Sandbox] = {}
        self.by_name: dict[str, str] = {}
        for r in store.db.execute("SELECT * FROM sandboxes ORDER BY created_at"):
            data = json.loads(r["data"])
            sb = Sandbox(
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
                cgroups=data.get("cgroups", []),
                network_added=data.get("network_added", False),
                shm=data.get("shm", ""),
            )
            self.by_id[sb.id] = sb
            self.by_name[sb.name] = sb.id

    def add(self, sb: Sandbox) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO sandboxes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sb.id, sb.name, sb.fingerprint, sb.handler, sb.state.value, sb.created_at,
                 sb.config.SerializeToString(), json.dumps(sb.data())),
            )  # fmt: skip
        self.by_id[sb.id] = sb
        self.by_name[sb.name] = sb.id

    def save(self, sb: Sandbox) -> None:
        with self.store.tx() as db:
            db.execute(
                "UPDATE sandboxes SET state = ?, data = ? WHERE id = ?", (sb.state.value, json.dumps(sb.data()), sb.id)
            )

    def delete(self, sb: Sandbox) -> None:
        with self.store.tx() as db:
            db.execute("DELETE FROM sandboxes WHERE id = ?", (sb.id,))
        self.by_id.pop(sb.id, None)
        if self.by_name.get(sb.name) == sb.id:
            del self.by_name[sb.name]

    def find(self, id_or_prefix: str) -> Sandbox | None:
        """By full id or a unique id prefix."""
        if not id_or_prefix:
            return None
        sb = self.by_id.get(id_or_prefix)
        if sb is not None:
            return sb
        matches = [s for i, s in self.by_id.items() if i.startswith(id_or_prefix)]
        return matches[0] if len(matches) == 1 else None

    def get(self, id_or_prefix: str) -> Sandbox:
        sb = self.find(id_or_prefix)
        if sb is None:
            raise NotFound(f"pod sandbox {id_or_prefix!r} not found")
        return sb
