"""Container exits: recorded as they happen, and reconciled after a restart.

conmon writes a container's exit code to the exit directory; the watcher
(exits.py) wakes crid for each file, so an exit is recorded at once. A
container that exited while crid was down is found by its exit file at
startup, with the file's time as the finish time; one whose process and
monitor are both gone (a reboot) is recorded as exited, code 255.

Once an exit is recorded the OCI runtime's record of the container (its
state and cgroup) is deleted in the background, as containerd deletes a
task when it exits: StopContainer waits for that, and RemoveContainer then
needs no runtime process of its own.
"""

import asyncio
import logging
import os
import time
from collections.abc import Callable

from cri import faults
from cri.log import fields
from cri.runtime.container_metrics import count_exit
from cri.runtime.container_store import Container, ContainerStore, State
from cri.runtime.events import EventBus, Kind
from cri.runtime.exits import ExitWatcher
from cri.runtime.oci import Runtime
from cri.runtime.sandbox_store import Sandbox
from cri.runtime.system import System

log = logging.getLogger("cri.runtime.containers")  # the containers' log, as before the split

MONITOR_WAIT = 10.0  # how long a monitor whose container is gone may take to write the exit file
DELETES_AT_ONCE = 4  # runtime deletes in flight (many exits recorded at once after a restart)


class Exits:
    def __init__(
        self,
        directory: str,
        store: ContainerStore,
        events: EventBus,
        system: System,
        runtime_of: Callable[[str], Runtime],
        pod_of: Callable[[str], Sandbox | None],
        starting: Callable[[str], bool],
        oom_killed: Callable[[Container], bool],
    ) -> None:
        self.store = store
        self.events = events
        self.system = system
        self.runtime_of = runtime_of  # the OCI runtime of a handler
        self.pod_of = pod_of  # for the events: the pod of a sandbox id, if it is still there
        self.starting = starting  # whether StartContainer holds the container
        self.oom_killed = oom_killed
        self.watcher = ExitWatcher(directory, self.on_exit, self.rescan)
        self._exited: dict[str, asyncio.Event] = {}
        self._deletes: dict[str, asyncio.Task[bool]] = {}
        self._delete_slots = asyncio.Semaphore(DELETES_AT_ONCE)

    def event(self, cid: str) -> asyncio.Event:
        return self._exited.setdefault(cid, asyncio.Event())

    def forget(self, cid: str) -> None:
        self._exited.pop(cid, None)
        self._deletes.pop(cid, None)

    def on_exit(self, cid: str) -> None:
        c = self.store.by_id.get(cid)
        if c is None or c.state not in (State.RUNNING, State.CREATED):
            return
        if c.state == State.CREATED and self.starting(cid):
            return  # being started: start() looks when done, so the exit is never recorded before the start
        found = self.watcher.exit_code(cid)
        if found is None:
            return
        code, when = found
        self.record(c, code, when)

    def rescan(self) -> None:
        log.warning("exit events were lost (inotify queue overflow); checking every container")
        for cid in list(self.store.by_id):
            self.on_exit(cid)

    def record(self, c: Container, code: int, when: int, message: str = "") -> None:
        # OOMKilled: the exit code stays the process's own, as containerd reports it
        reason = "OOMKilled" if self.oom_killed(c) else "Completed" if code == 0 else "Error"
        self.store.update(
            c, state=State.EXITED, message=message, exit_code=code, finished_at=max(when, c.started_at), reason=reason
        )
        faults.step("StopContainer.exit_recorded")
        self.event(c.id).set()
        self.events.publish(Kind.STOPPED, self.pod_of(c.sandbox_id), c.id)
        log.info("container exited", extra=fields(id=c.id, name=c.name, code=c.exit_code, reason=c.reason))
        count_exit(c.reason)
        self._delete_soon(c)

    def _delete_soon(self, c: Container) -> None:
        if c.id in self._deletes:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a unit test's direct call): RemoveContainer deletes it
            return
        self._deletes[c.id] = loop.create_task(self._delete(c), name=f"delete {c.id[:12]}")

    async def _delete(self, c: Container) -> bool:
        async with self._delete_slots:
            try:
                await self.runtime_of(c.handler).delete(c.id)
            except Exception as exc:  # a background task: RemoveContainer tries again
                log.warning("runtime delete after the exit failed", extra=fields(id=c.id, error=str(exc)))
                return False
        return True

    async def runtime_deleted(self, cid: str) -> bool:
        """Wait for the runtime delete started at the exit; whether it is done (False:
        none was started in this daemon's life, or it failed, and the caller deletes)."""
        task = self._deletes.get(cid)
        return task is not None and await asyncio.shield(task)

    async def drain(self, seconds: float) -> None:
        """At shutdown: let the runtime deletes in flight finish."""
        pending = [t for t in self._deletes.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=seconds)

    async def wait(self, c: Container, seconds: float) -> bool:
        """Whether the container exited within ``seconds``."""
        if c.state == State.EXITED:
            return True
        try:
            await asyncio.wait_for(self.event(c.id).wait(), seconds)
        except TimeoutError:
            self.on_exit(c.id)
        return exited(c)  # the exit event (or the check above) may have changed the state

    async def reconcile(self, c: Container, bundle: str) -> None:
        """After a restart: bring a created/running record in line with what is really there."""
        found = self.watcher.exit_code(c.id)
        if found is not None:
            self.record(c, *found)
            return
        if c.state == State.RUNNING and self.system.same_process(c.pid, c.pid_start):
            return  # still running: no `runtime state` (a process each) per container at startup
        state = await self.runtime_of(c.handler).state(c.id)
        status = state.get("status") if state else None
        if status in ("running", "created") and self.system.same_process(c.pid, c.pid_start):
            if status == "running" and c.state == State.CREATED:  # crid died right after `runtime start`
                self.store.update(c, state=State.RUNNING, started_at=c.started_at or time.time_ns())
            return
        if self.system.live_monitor(bundle):
            # the process is gone but its monitor is not: it is about to write the exit file,
            # which the exit watcher (started before recovery) records with the real code
            exit_file = os.path.join(self.watcher.directory, c.id)
            await asyncio.to_thread(wait_for_file, exit_file, MONITOR_WAIT)
            self.on_exit(c.id)
            if c.state == State.EXITED:
                return
        # no exit file and no such process: the monitor went with it (a reboot, or it was killed)
        self.record(c, 255, time.time_ns())
        self.store.update(c, reason="Unknown", message="the container's process and monitor are gone")


def exited(c: Container) -> bool:
    return c.state == State.EXITED


def wait_for_file(path: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.005)
