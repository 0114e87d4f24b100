"""A table of pod or container records: SQLite rows mirrored in memory.

Both kinds share the shape ``(id, name, fingerprint, owner, state,
created_at, config, data)``: the CRI config as protobuf bytes and the rest
as JSON. Reads come from memory; a change is made with ``update`` (set the
fields, write the row) before anything relies on it.
"""

import json
import sqlite3
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from cri.errors import NotFound
from cri.store import Store


class Record(Protocol):
    id: str
    name: str
    fingerprint: str
    created_at: int

    @property
    def state_value(self) -> str: ...

    @property
    def owner(self) -> str: ...

    def config_bytes(self) -> bytes: ...

    def data(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=Record)


def schema(table: str, owner_column: str) -> list[str]:
    return [
        f"""
        CREATE TABLE {table} (
            id TEXT PRIMARY KEY,
            name TEXT UNIQUE NOT NULL,
            fingerprint TEXT NOT NULL,
            {owner_column} TEXT NOT NULL,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            config BLOB NOT NULL,
            data TEXT NOT NULL
        )
        """
    ]


class RecordTable(Generic[R]):
    def __init__(
        self, store: Store, table: str, owner_column: str, what: str, load: Callable[[sqlite3.Row, dict[str, Any]], R]
    ) -> None:
        self.store = store
        self.table = table
        self.what = what
        store.migrate(table, schema(table, owner_column))
        self.by_id: dict[str, R] = {}
        self.by_name: dict[str, str] = {}
        self.generation = 0  # moves at every write: what the server's list replies are kept by
        for row in store.db.execute(f"SELECT * FROM {table} ORDER BY created_at"):
            record = load(row, json.loads(row["data"]))
            self.by_id[record.id] = record
            self.by_name[record.name] = record.id

    def add(self, r: R) -> None:
        with self.store.tx() as db:
            db.execute(
                f"INSERT INTO {self.table} VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (r.id, r.name, r.fingerprint, r.owner, r.state_value, r.created_at, r.config_bytes(),
                 json.dumps(r.data())),
            )  # fmt: skip
        self.by_id[r.id] = r
        self.by_name[r.name] = r.id
        self.generation += 1

    def save(self, r: R) -> None:
        with self.store.tx() as db:
            db.execute(
                f"UPDATE {self.table} SET state = ?, data = ? WHERE id = ?", (r.state_value, json.dumps(r.data()), r.id)
            )
        self.generation += 1

    def update(self, r: R, **changes: Any) -> None:
        """Change fields of a record and write it, in one call (as containerd's UpdateSync)."""
        unknown = [name for name in changes if not hasattr(r, name)]
        if unknown:  # a typo must not half-change the record
            raise AttributeError(f"{type(r).__name__} has no field {unknown[0]!r}")
        for name, value in changes.items():
            setattr(r, name, value)
        self.save(r)

    def delete(self, r: R) -> None:
        with self.store.tx() as db:
            db.execute(f"DELETE FROM {self.table} WHERE id = ?", (r.id,))
        self.by_id.pop(r.id, None)
        if self.by_name.get(r.name) == r.id:
            del self.by_name[r.name]
        self.generation += 1

    def find(self, id_or_prefix: str) -> R | None:
        """By full id or a unique id prefix (crictl shows 13 characters)."""
        if not id_or_prefix:
            return None
        r = self.by_id.get(id_or_prefix)
        if r is not None:
            return r
        matches = [r for i, r in self.by_id.items() if i.startswith(id_or_prefix)]
        return matches[0] if len(matches) == 1 else None

    def get(self, id_or_prefix: str) -> R:
        r = self.find(id_or_prefix)
        if r is None:
            raise NotFound(f"{self.what} {id_or_prefix!r} not found")
        return r
