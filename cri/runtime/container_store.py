"""Container records: the SQLite table and the in-memory view served to reads."""

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import NotFound
from cri.store import Store

MIGRATIONS = [
    """
    CREATE TABLE containers (
        id TEXT PRIMARY KEY,
        name TEXT UNIQUE NOT NULL,
        fingerprint TEXT NOT NULL,
        sandbox_id TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        config BLOB NOT NULL,
        data TEXT NOT NULL
    )
    """,
]


class State(StrEnum):
    CREATING = "creating"  # CreateContainer in progress (never reported as such)
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass
class Container:
    id: str
    name: str
    fingerprint: str
    sandbox_id: str
    state: State
    created_at: int
    config: pb.ContainerConfig
    handler: str = ""
    image_id: str = ""
    image_name: str = ""  # what ContainerStatus reports as its image (a repo tag when it has one)
    image_ref: str = ""  # a repo digest when known, else the id
    chain_ids: list[str] = field(default_factory=list)
    log_path: str = ""
    stop_signal: str = "SIGTERM"
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    rootfs_mounted: bool = False
    uid: int = 0
    gid: int = 0
    groups: list[int] = field(default_factory=list)
    resources: bytes = b""  # LinuxContainerResources as last applied

    _DATA = (
        "handler", "image_id", "image_name", "image_ref", "chain_ids", "log_path", "stop_signal", "pid",
        "started_at", "finished_at", "exit_code", "reason", "message", "rootfs_mounted", "uid", "gid", "groups",
    )  # fmt: skip

    def data(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._DATA}
        out["resources"] = self.resources.hex()
        return out


class ContainerStore:
    def __init__(self, store: Store) -> None:
        self.store = store
        store.migrate("containers", MIGRATIONS)
        self.by_id: dict[str, Container] = {}
        self.by_name: dict[str, str] = {}
        for r in store.db.execute("SELECT * FROM containers ORDER BY created_at"):
            data = json.loads(r["data"])
            c = Container(
                id=r["id"],
                name=r["name"],
                fingerprint=r["fingerprint"],
                sandbox_id=r["sandbox_id"],
                state=State(r["state"]),
                created_at=r["created_at"],
                config=pb.ContainerConfig.FromString(r["config"]),
            )
            for k in Container._DATA:
                if k in data:
                    setattr(c, k, data[k])
            c.resources = bytes.fromhex(data.get("resources", ""))
            self.by_id[c.id] = c
            self.by_name[c.name] = c.id

    def add(self, c: Container) -> None:
        with self.store.tx() as db:
            db.execute(
                "INSERT INTO containers VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (c.id, c.name, c.fingerprint, c.sandbox_id, c.state.value, c.created_at,
                 c.config.SerializeToString(), json.dumps(c.data())),
            )  # fmt: skip
        self.by_id[c.id] = c
        self.by_name[c.name] = c.id

    def save(self, c: Container) -> None:
        with self.store.tx() as db:
            db.execute(
                "UPDATE containers SET state = ?, data = ? WHERE id = ?", (c.state.value, json.dumps(c.data()), c.id)
            )

    def delete(self, c: Container) -> None:
        with self.store.tx() as db:
            db.execute("DELETE FROM containers WHERE id = ?", (c.id,))
        self.by_id.pop(c.id, None)
        if self.by_name.get(c.name) == c.id:
            del self.by_name[c.name]

    def find(self, id_or_prefix: str) -> Container | None:
        if not id_or_prefix:
            return None
        c = self.by_id.get(id_or_prefix)
        if c is not None:
            return c
        matches = [c for i, c in self.by_id.items() if i.startswith(id_or_prefix)]
        return matches[0] if len(matches) == 1 else None

    def get(self, id_or_prefix: str) -> Container:
        c = self.find(id_or_prefix)
        if c is None or c.state == State.CREATING:
            raise NotFound(f"container {id_or_prefix!r} not found")
        return c

    def of_sandbox(self, sandbox_id: str) -> list[Container]:
        return [c for c in self.by_id.values() if c.sandbox_id == sandbox_id]
