"""crid's durable state: one SQLite database (``<root>/metadata.db``, WAL).

Each layer owns its tables and declares them as a list of migrations;
``Store.migrate`` applies the ones not yet applied. The database is used from
the event loop thread only: its writes are small, and WAL with
synchronous=NORMAL survives a killed daemon without an fsync per commit.
"""

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence


class Store:
    def __init__(self, root_dir: str) -> None:
        self.path = os.path.join(root_dir, "metadata.db")
        self.db = sqlite3.connect(self.path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS migrations (component TEXT, step INTEGER, PRIMARY KEY (component, step))"
        )

    def migrate(self, component: str, steps: Sequence[str]) -> None:
        """Apply ``steps`` (SQL scripts) of ``component`` not applied yet, in order."""
        done = {row[0] for row in self.db.execute("SELECT step FROM migrations WHERE component = ?", (component,))}
        for i, script in enumerate(steps):
            if i in done:
                continue
            with self.tx():
                for statement in filter(None, (s.strip() for s in script.split(";"))):
                    self.db.execute(statement)
                self.db.execute("INSERT INTO migrations VALUES (?, ?)", (component, i))

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all or nothing."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()
