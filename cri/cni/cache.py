"""The per-pod network cache: what DEL and CHECK need, whatever the conf dir says now.

One JSON file per pod, ``<cache_dir>/<pod id>.json``, written atomically
(tmp file, fsync, rename). It is written twice during an ADD: before the
first plugin runs (``result`` is null) so that a daemon killed mid-ADD still
knows what to DEL, and again with the final result.
"""

import asyncio
import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from typing import Any

from cri import faults
from cri.errors import FailedPrecondition, InvalidArgument

KIND = "cridCniCacheV1"
POD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MAX_ENTRY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class CacheEntry:
    pod_id: str
    conflist: dict[str, Any]  # the network config used for ADD (a single .conf already wrapped)
    source: str  # the file it came from, for messages
    ifname: str
    cni_args: str
    capability_args: dict[str, Any]  # runtimeConfig values by capability, replayed on DEL
    netns: str  # the netns of the ADD (informational: DEL gets the caller's)
    result: dict[str, Any] | None  # the final plugin's result as printed; None while the ADD runs

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "podId": self.pod_id,
            "config": self.conflist,
            "source": self.source,
            "ifName": self.ifname,
            "cniArgs": self.cni_args,
            "capabilityArgs": self.capability_args,
            "netns": self.netns,
            "result": self.result,
        }

    @classmethod
    def from_json(cls, obj: Any) -> "CacheEntry":
        if not isinstance(obj, dict) or obj.get("kind") != KIND:
            raise ValueError("not a crid CNI cache entry")
        result = obj.get("result")
        if not isinstance(obj.get("config"), dict) or not isinstance(obj.get("capabilityArgs"), dict):
            raise ValueError("config or capabilityArgs missing")
        if result is not None and not isinstance(result, dict):
            raise ValueError("result is not an object")
        return cls(
            pod_id=str(obj["podId"]),
            conflist=obj["config"],
            source=str(obj.get("source", "")),
            ifname=str(obj["ifName"]),
            cni_args=str(obj["cniArgs"]),
            capability_args=obj["capabilityArgs"],
            netns=str(obj.get("netns", "")),
            result=result,
        )


def check_pod_id(pod_id: str) -> str:
    if not POD_ID_RE.match(pod_id):
        raise InvalidArgument(f"invalid pod sandbox id {pod_id!r}")
    return pod_id


class ResultCache:
    def __init__(self, cache_dir: str) -> None:
        self.dir = cache_dir
        # what this daemon wrote: a DEL or CHECK does not read back the file it wrote itself
        self._written: dict[str, CacheEntry] = {}

    def path(self, pod_id: str) -> str:
        return os.path.join(self.dir, check_pod_id(pod_id) + ".json")

    def read_sync(self, pod_id: str) -> CacheEntry | None:
        path = self.path(pod_id)
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_ENTRY_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise FailedPrecondition(f"cannot read the CNI cache of pod {pod_id} ({path}): {e.strerror}") from None
        try:
            if len(data) > MAX_ENTRY_BYTES:
                raise ValueError("too large")
            return CacheEntry.from_json(json.loads(data))
        except (ValueError, KeyError, TypeError) as e:
            raise FailedPrecondition(f"the CNI cache of pod {pod_id} ({path}) is corrupt: {e}") from None

    def write_sync(self, entry: CacheEntry) -> None:
        path = self.path(entry.pod_id)
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{entry.pod_id}.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(entry.to_json(), f)
                f.flush()
                os.fsync(f.fileno())
            faults.step("RunPodSandbox.cni_cache_half_written")
            os.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._sync_dir()
        self._written[entry.pod_id] = entry

    def remove_sync(self, pod_id: str) -> None:
        """Not synced to disk: an entry back after a power loss only gets its DEL again, which
        plugins must take (the spec's DEL is idempotent)."""
        self._written.pop(pod_id, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(pod_id))

    def pod_ids_sync(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n[: -len(".json")] for n in names if n.endswith(".json") and POD_ID_RE.match(n[:-5]))

    def clear_tmp_sync(self) -> None:
        """Remove the tmp files of writes a killed daemon left half done (they are never read)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.dir, name))

    def _sync_dir(self) -> None:
        # the rename or unlink itself must survive a power loss too
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    async def read(self, pod_id: str) -> CacheEntry | None:
        known = self._written.get(pod_id)
        return known if known is not None else await asyncio.to_thread(self.read_sync, pod_id)

    async def write(self, entry: CacheEntry) -> None:
        await asyncio.to_thread(self.write_sync, entry)

    async def remove(self, pod_id: str) -> None:
        await asyncio.to_thread(self.remove_sync, pod_id)

    async def pod_ids(self) -> list[str]:
        return await asyncio.to_thread(self.pod_ids_sync)
