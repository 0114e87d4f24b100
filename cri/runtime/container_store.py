"""Container records (see records.py for the table)."""

import sqlite3
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import NotFound
from cri.runtime.records import RecordTable
from cri.store import Store


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
    cgroups_path: str = ""
    pid_start: int = 0  # the container process's start time: tells it from a reused pid
    # in memory only: a container created before a restart is started through the runtime
    poststart_hooks: bool = True

    _DATA = (
        "handler", "image_id", "image_name", "image_ref", "chain_ids", "log_path", "stop_signal", "pid",
        "started_at", "finished_at", "exit_code", "reason", "message", "rootfs_mounted", "uid", "gid", "groups",
        "cgroups_path", "pid_start",
    )  # fmt: skip

    @property
    def state_value(self) -> str:
        return self.state.value

    @property
    def owner(self) -> str:
        return self.sandbox_id

    def config_bytes(self) -> bytes:
        return self.config.SerializeToString()

    def data(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self._DATA}
        out["resources"] = self.resources.hex()
        return out


def _load(r: sqlite3.Row, data: dict[str, Any]) -> Container:
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
    return c


class ContainerStore(RecordTable[Container]):
    def __init__(self, store: Store) -> None:
        super().__init__(store, "containers", "sandbox_id", "container", _load)

    def get(self, id_or_prefix: str) -> Container:
        c = super().get(id_or_prefix)
        if c.state == State.CREATING:
            raise NotFound(f"container {id_or_prefix!r} not found")
        return c

    def of_sandbox(self, sandbox_id: str) -> list[Container]:
        return [c for c in self.by_id.values() if c.sandbox_id == sandbox_id]

    def matching(self, filt: pb.ContainerFilter | pb.ContainerStatsFilter | None) -> list[Container]:
        """Containers matching a ListContainers or ListContainerStats filter (ids by prefix);
        those being created are never listed."""
        states = {
            pb.CONTAINER_CREATED: State.CREATED,
            pb.CONTAINER_RUNNING: State.RUNNING,
            pb.CONTAINER_EXITED: State.EXITED,
        }
        want_state = None
        if isinstance(filt, pb.ContainerFilter) and filt.HasField("state"):
            want_state = states.get(filt.state.state)
        out = []
        for c in self.by_id.values():
            if c.state == State.CREATING:
                continue
            if filt is not None:
                if filt.id and not c.id.startswith(filt.id):
                    continue
                if filt.pod_sandbox_id and not c.sandbox_id.startswith(filt.pod_sandbox_id):
                    continue
                if isinstance(filt, pb.ContainerFilter) and filt.HasField("state") and want_state != c.state:
                    continue
                if any(c.config.labels.get(k) != v for k, v in filt.label_selector.items()):
                    continue
            out.append(c)
        return out
