"""Directories on their way out: renamed aside (atomic and cheap), deleted in
the background.

Deleting the few directories of a container takes tens of milliseconds on
some disks (one rmdir costs about 3 ms on ext4 mounted with ``discard``), and
RemoveContainer need not wait for it. A directory is discarded only once
nothing uses it any more (a container's rootfs is unmounted first): from the
rename on, its name under ``trash/`` is all that is left of it, so its record
can go, and what a killed daemon had not deleted yet is deleted at the next
start. A directory that cannot be renamed there (another filesystem) is
deleted in place before ``discard`` returns, as before.
"""

import asyncio
import contextlib
import logging
import os
import secrets
import shutil

from cri.log import fields

log = logging.getLogger(__name__)


class Trash:
    def __init__(self, *tops: str) -> None:
        """One trash dir under each of ``tops`` (crid's root and state dirs): a rename stays
        within its filesystem."""
        self._dirs = [(os.path.join(top, ""), os.path.join(top, "trash")) for top in tops]
        self._tasks: set[asyncio.Task[None]] = set()

    async def discard(self, *paths: str) -> None:
        """Make ``paths`` disappear now; their contents are deleted in the background."""
        for path in paths:
            moved = self._move(path)
            if moved is None:
                await asyncio.to_thread(shutil.rmtree, path, True)
            elif moved:
                self._delete(moved)

    def _move(self, path: str) -> str | None:
        """The new name, "" if ``path`` does not exist, None if it must be deleted in place."""
        for top, trash in self._dirs:
            if not path.startswith(top):
                continue
            os.makedirs(trash, mode=0o700, exist_ok=True)
            target = os.path.join(trash, f"{os.path.basename(path)}.{secrets.token_hex(4)}")
            try:
                os.rename(path, target)
            except FileNotFoundError:
                return ""
            except OSError as exc:  # EXDEV: a separate mount below the top dir
                log.debug("cannot move to the trash; deleting in place", extra=fields(path=path, error=str(exc)))
                return None
            return target
        return None

    def _delete(self, path: str) -> None:
        task = asyncio.ensure_future(asyncio.to_thread(shutil.rmtree, path, True))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def recover(self) -> None:
        """At startup: delete in the background what a killed daemon left."""
        for _, trash in self._dirs:
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(trash):
                    self._delete(os.path.join(trash, name))

    async def drain(self, seconds: float) -> None:
        """At shutdown: let the deletions in progress finish (bounded); the next start does the rest."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=seconds)
