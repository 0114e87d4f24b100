"""The OCI runtime command line (runc, crun or compatible), run asynchronously.

Errors come back with the runtime's own message: it is read from the JSON log
the runtime writes with ``--log-format json``, which is clearer than stderr.
"""

import asyncio
import contextlib
import json
import os
import tempfile
from dataclasses import dataclass

from cri.errors import FailedPrecondition, NotFound

COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class OciRuntime:
    name: str  # the handler name
    binary: str
    root: str  # --root: where the runtime keeps its state

    async def run(self, *args: str, time_limit: float = COMMAND_TIMEOUT, capture: bool = True) -> str:
        """Run ``binary --root ROOT ARGS``; returns stdout, raises with the runtime's message.

        ``capture=False`` gives the runtime /dev/null as stdio: a detached container
        inherits it, and would otherwise hold our pipes open forever."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        fd, log_path = tempfile.mkstemp(prefix="oci-", suffix=".log", dir=self.root)
        os.close(fd)
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary,
                "--root",
                self.root,
                "--log",
                log_path,
                "--log-format",
                "json",
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
            )
            try:
                out, err = await asyncio.wait_for(proc.communicate(), time_limit)
            except TimeoutError:
                proc.kill()
                await proc.wait()
                raise FailedPrecondition(f"{self.name}: '{args[0]}' did not finish within {time_limit:g}s") from None
            if proc.returncode != 0:
                stderr = (err or b"").decode(errors="replace").strip()
                message = _log_error(log_path) or stderr or f"exit {proc.returncode}"
                if "does not exist" in message or "not found" in message.lower():
                    raise NotFound(f"{self.name} {args[0]}: {message}")
                raise FailedPrecondition(f"{self.name} {args[0]}: {message}")
            return (out or b"").decode(errors="replace")
        finally:
            os.unlink(log_path)

    async def state(self, container_id: str) -> dict[str, object] | None:
        """``state`` of a container, None when the runtime does not know it."""
        try:
            out = await self.run("state", container_id)
        except NotFound:
            return None
        doc = json.loads(out)
        return doc if isinstance(doc, dict) else None

    async def kill(self, container_id: str, signal: str = "KILL") -> None:
        try:
            await self.run("kill", container_id, signal)
        except (NotFound, FailedPrecondition) as exc:
            if "not running" not in str(exc) and not isinstance(exc, NotFound):
                raise

    async def delete(self, container_id: str) -> None:
        """Force-delete; a container the runtime does not know is fine."""
        with contextlib.suppress(NotFound):
            await self.run("delete", "--force", container_id)


def _log_error(path: str) -> str:
    """The last error-level message of a runtime's JSON log."""
    message = ""
    try:
        with open(path) as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                    message = str(entry.get("msg", ""))
    except OSError:
        return ""
    return message
