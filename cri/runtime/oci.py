"""The OCI runtime: what crid asks of it (``Runtime``), and the implementation
for runc, crun or any runc-compatible command line (``OciRuntime``).

Pods and containers talk to a runtime only through ``Runtime``, so unit tests
drive their state machines with a fake one. Errors come back with the
runtime's own message: it is read from the JSON log the runtime writes with
``--log-format json``, which is clearer than stderr.
"""

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cri.errors import FailedPrecondition, NotFound
from cri.runtime import sealed_binary
from cri.runtime.child import Child

if TYPE_CHECKING:
    from cri.runtime.monitor import MonitorSpec

COMMAND_TIMEOUT = 60.0
OUTPUT_LIMIT = 1024 * 1024  # of a command's stdout, stderr and log, kept (state, features: a few KiB)
FEATURES_TIMEOUT = 10.0


class Runtime(Protocol):
    """An OCI runtime of one handler."""

    @property
    def name(self) -> str: ...  # the handler name

    async def create(self, spec: "MonitorSpec") -> int:
        """Create the container under its own monitor; returns the container's pid."""
        ...

    async def run_detached(self, container_id: str, bundle: str, pid_file: str) -> None:
        """Create and start a container without a monitor (the pod's infra process)."""
        ...

    async def start(self, container_id: str) -> None: ...

    async def state(self, container_id: str) -> dict[str, object] | None:
        """The runtime's state of a container, None when it does not know it."""
        ...

    async def kill(self, container_id: str, signal: str = "KILL") -> None:
        """Signal a container (a number or a name); one that is not running is fine."""
        ...

    async def delete(self, container_id: str) -> None:
        """Force-delete; a container the runtime does not know is fine."""
        ...

    async def update(self, container_id: str, resources: Mapping[str, object], scratch_dir: str) -> None:
        """Apply an OCI ``linux.resources`` document (its file is written in ``scratch_dir``)."""
        ...

    def exec_command(self, container_id: str, process_path: str, pid_path: str | None) -> list[str]:
        """The command line that runs the process of ``process_path`` in the container
        in the foreground, writing its pid to ``pid_path`` (if one is given)."""
        ...

    async def features(self) -> dict[str, object]:
        """What the runtime says it supports (``features``); {} when it cannot say."""
        ...

    async def pause(self, container_id: str) -> None: ...

    async def resume(self, container_id: str) -> None: ...

    async def checkpoint(self, container_id: str, image_dir: str, work_dir: str, time_limit: float) -> None:
        """Dump the container's processes with CRIU into ``image_dir`` (its log in
        ``work_dir``), leaving them running."""
        ...


@dataclass(frozen=True)
class OciRuntime:
    """A runc-compatible command line."""

    name: str  # the handler name
    binary: str
    root: str  # --root: where the runtime keeps its state

    @property
    def executable(self) -> str:
        """What runs as the runtime's commands: a sealed copy of the binary (sealed_binary.py)."""
        return sealed_binary.executable(self.binary)

    async def run(self, *args: str, time_limit: float = COMMAND_TIMEOUT, capture: bool = True) -> str:
        """Run ``binary --root ROOT ARGS``; returns stdout, raises with the runtime's message.

        ``capture=False`` gives the runtime /dev/null as stdio: a detached container
        inherits it, and would otherwise hold our pipes open forever. The runtime's JSON log
        goes to a memfd at its fd 3: no file is made and removed in its root per command."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        argv = [self.executable, "--root", self.root, "--log", "/proc/self/fd/3", "--log-format", "json", *args]
        log = os.memfd_create("crid-oci-log", os.MFD_CLOEXEC)
        try:
            try:
                child = Child(argv, OUTPUT_LIMIT, fd3=log, capture=capture)
            except OSError as exc:
                raise FailedPrecondition(f"cannot run the OCI runtime {self.binary}: {exc.strerror}") from None
            try:
                code = await asyncio.wait_for(child.communicate(), time_limit)
            except TimeoutError:
                child.kill()
                await child.wait()
                raise FailedPrecondition(f"{self.name}: '{args[0]}' did not finish within {time_limit:g}s") from None
            finally:
                child.close()
            if code != 0:
                stderr = child.output(2)[0].decode(errors="replace").strip()
                message = _log_error(log) or stderr or f"exit {code}"
                if "does not exist" in message or "not found" in message.lower():
                    raise NotFound(f"{self.name} {args[0]}: {message}")
                raise FailedPrecondition(f"{self.name} {args[0]}: {message}")
            return child.output(1)[0].decode(errors="replace")
        finally:
            os.close(log)

    async def create(self, spec: "MonitorSpec") -> int:
        from cri.runtime import monitor  # it imports this module

        return await monitor.create(self, spec)

    async def run_detached(self, container_id: str, bundle: str, pid_file: str) -> None:
        await self.run("run", "--detach", "--bundle", bundle, "--pid-file", pid_file, container_id, capture=False)

    async def start(self, container_id: str) -> None:
        await self.run("start", container_id)

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

    async def update(self, container_id: str, resources: Mapping[str, object], scratch_dir: str) -> None:
        fd, path = tempfile.mkstemp(prefix="update-", suffix=".json", dir=scratch_dir)
        with os.fdopen(fd, "w") as f:
            json.dump(resources, f)
        try:
            await self.run("update", "--resources", path, container_id)
        finally:
            os.unlink(path)

    async def pause(self, container_id: str) -> None:
        await self.run("pause", container_id)

    async def resume(self, container_id: str) -> None:
        await self.run("resume", container_id)

    async def checkpoint(self, container_id: str, image_dir: str, work_dir: str, time_limit: float) -> None:
        # --file-locks as CRI-O: a container holding a lock would fail the dump otherwise
        args = ["--image-path", image_dir, "--work-path", work_dir, "--leave-running", "--file-locks"]
        await self.run("checkpoint", *args, container_id, time_limit=time_limit)

    def exec_command(self, container_id: str, process_path: str, pid_path: str | None) -> list[str]:
        # no --log: exec's stderr is the command's own
        exe = [self.executable, "--root", self.root, "exec", "--process", process_path]
        return [*exe, *(["--pid-file", pid_path] if pid_path else []), container_id]

    async def features(self) -> dict[str, object]:
        """``<runtime> features`` (runc >= 1.1)."""
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "features", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
            )
            out, _ = await asyncio.wait_for(proc.communicate(), FEATURES_TIMEOUT)
            doc = json.loads(out) if proc.returncode == 0 else {}
        except (OSError, TimeoutError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}


def _log_error(log: int) -> str:
    """The last error-level message of a runtime's JSON log (the memfd it wrote)."""
    message = ""
    size = os.fstat(log).st_size
    for line in os.pread(log, min(size, OUTPUT_LIMIT), max(0, size - OUTPUT_LIMIT)).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            message = str(entry.get("msg", ""))
    return message
