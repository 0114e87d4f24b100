"""Containers: create, start, stop, remove, exec, status, and recovery.

Every container runs under its own conmon (see monitor.py); crid talks to the OCI runtime only through
short commands, so a crid restart never touches a running container. Exits are recorded by
container_exits.py; ExecSync is exec_sync.py, Exec exec_session.py, usage sampling stats.py.
"""

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import signal
import time
from collections.abc import KeysView

from cri import faults
from cri.api.v1 import api_pb2 as pb
from cri.config import Config
from cri.errors import FailedPrecondition, InvalidArgument, NotFound
from cri.images.manager import Images
from cri.log import fields
from cri.runtime import checkpoint, exec_fifo, idmap, monitor, userns
from cri.runtime.attach import attach as attach_stdio
from cri.runtime.bundle import BundleDirs, Mount, make_bundle, read_json
from cri.runtime.container_exits import Exits, exited, wait_for_file
from cri.runtime.container_store import Container, ContainerStore, State
from cri.runtime.events import EventBus, Kind
from cri.runtime.exec_session import run_exec
from cri.runtime.exec_sync import ExecResult, exec_sync
from cri.runtime.handlers import Handlers
from cri.runtime.image_volumes import ImageVolumes
from cri.runtime.lifecycle import Lifecycle
from cri.runtime.pod_config import pod_hostname
from cri.runtime.pods import Pods
from cri.runtime.sandbox_store import Sandbox
from cri.runtime.sandbox_store import State as PodState
from cri.runtime.spec import SpecInputs, signal_number, stop_signal, update_resources
from cri.runtime.spec.types import Spec
from cri.runtime.stats import Usage, UsageSampler
from cri.runtime.stdio import Stdio
from cri.runtime.system import System
from cri.runtime.trash import Trash
from cri.store import Store

log = logging.getLogger(__name__)

KILL_WAIT = 10.0  # after SIGKILL, how long an exit may take before crid gives up waiting
REOPEN_WAIT = 2.0  # how long conmon may take to reopen a log file


class Containers:
    def __init__(
        self,
        config: Config,
        store: Store,
        pods: Pods,
        images: Images,
        handlers: Handlers,
        events: EventBus | None = None,
        system: System | None = None,
    ) -> None:
        self.config = config
        self.events = events if events is not None else EventBus()
        self.handlers = handlers
        self.pods = pods
        self.images = images
        self.system = system if system is not None else System()
        self.store = ContainerStore(store)
        self.life = Lifecycle(self.store)
        self.exits = Exits(
            os.path.join(config.state_dir, "exits"),
            self.store,
            self.events,
            self.system,
            runtime_of=handlers.runtime,
            pod_of=pods.store.by_id.get,
            starting=self.life.locks.locked,  # StartContainer holds the container's lock
            oom_killed=self._oom_killed,
        )
        self._min_oom = self.system.oom_score_adj()
        self.kill_wait = KILL_WAIT
        self.usage = UsageSampler()
        self.trash = Trash(config.root_dir, config.state_dir)
        self.volumes = ImageVolumes(images, config.state_dir)

    # --- paths and helpers -------------------------------------------------------

    def bundle(self, cid: str) -> str:
        return os.path.join(self.config.state_dir, "containers", cid)

    def persist(self, cid: str) -> str:
        return os.path.join(self.config.root_dir, "containers", cid)

    def attach_dir(self, cid: str) -> str:
        """Where conmon puts the container's attach socket: its --socket-dir-path/<id>,
        a symlink conmon makes to the bundle dir (keeps the socket path short)."""
        return os.path.join(self.config.state_dir, "attach", cid)

    def chains_in_use(self) -> set[str]:
        """The snapshots containers use (what image GC keeps)."""
        return {chain for c in self.store.by_id.values() for chain in c.chain_ids} | self.volumes.chains_in_use()

    # --- CreateContainer -----------------------------------------------------------

    async def create(self, sandbox_id: str, config: pb.ContainerConfig) -> str:
        sb = self.pods.store.find(sandbox_id)
        if sb is None or sb.state == PodState.CREATING:
            raise NotFound(f"pod sandbox {sandbox_id!r} not found")
        if sb.state != PodState.READY:
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
        if not config.metadata.name:
            raise InvalidArgument("container metadata lacks a name")
        if not config.image.image:
            raise InvalidArgument("container config lacks an image")
        image = self.images.find(config.image.image)
        if image is None:
            raise NotFound(f"image {config.image.image!r} not found: pull it first")
        m, pm = config.metadata, sb.config.metadata
        name = f"{m.name}_{pm.name}_{pm.namespace}_{pm.uid}_{m.attempt}"
        fingerprint = hashlib.sha256(config.SerializeToString(deterministic=True) + sb.id.encode()).hexdigest()
        config = self.volumes.with_refs(config)
        joined = await self.life.reserve(
            name, fingerprint, lambda c: f"container name {name!r} is already reserved for container {c.id}"
        )
        if joined is not None:
            return joined
        log_path = ""
        if sb.config.log_directory and config.log_path:
            log_path = os.path.join(sb.config.log_directory, config.log_path)
        c = Container(
            id=hashlib.sha256(os.urandom(32)).hexdigest(),
            name=name,
            fingerprint=fingerprint,
            sandbox_id=sb.id,
            state=State.CREATING,
            created_at=time.time_ns(),
            config=config,
            handler=sb.handler,
            image_id=image.id,
            image_name=image.tags[0] if image.tags else config.image.image,
            image_ref=image.digests[0] if image.digests else image.id,
            chain_ids=list(image.chain_ids),
            log_path=log_path,
            resources=config.linux.resources.SerializeToString(),
        )
        self.store.add(c)
        faults.step("CreateContainer.recorded")
        return await self.life.launch(name, self._create(c, sb))

    async def _create(self, c: Container, sb: Sandbox) -> str:
        started = time.monotonic()
        await self.life.attempt(c.id, lambda: self._make(c, sb), lambda exc: self._undo(c, exc))
        log.info("container created", extra=fields(id=c.id, name=c.name, seconds=round(time.monotonic() - started, 4)))
        return c.id

    async def _make(self, c: Container, sb: Sandbox) -> None:
        await self._setup(c, sb)
        self.store.update(c, state=State.CREATED)
        faults.step("CreateContainer.created_recorded")
        self.events.publish(Kind.CREATED, sb, c.id)

    async def _undo(self, c: Container, exc: BaseException) -> None:
        log.info("container create failed, undoing", extra=fields(id=c.id, name=c.name, error=str(exc)))
        try:
            await self._cleanup(c)
        except Exception as undo:  # keep the record so RemoveContainer can finish the job (undo's error is raised)
            log.warning("container undo incomplete; kept for removal", extra=fields(id=c.id, error=str(undo)))
            self.exits.record(c, 255, time.time_ns(), f"create failed: {exc}")
            self.store.update(c, reason="CreateFailed")
            raise
        self.store.delete(c)

    async def _setup(self, c: Container, sb: Sandbox) -> None:
        image = self.images.meta.images.get(c.image_id)
        if image is None:
            raise NotFound(f"image {c.image_id} was removed")
        dirs = BundleDirs(self.bundle(c.id), self.persist(c.id))
        opts = sb.config.linux.security_context.namespace_options
        ids = userns.container_mapping(c.config.linux.security_context.namespace_options, opts)
        image_config = self.images.config_of(image)
        cg = sb.config.linux.cgroup_parent.rstrip("/")
        # without a pod cgroup, a top-level leaf that `runtime delete` removes whole
        c.cgroups_path = f"{cg}/{c.id}" if cg else f"/crid-{c.id}"
        inputs = SpecInputs(
            container_id=c.id,
            config=await self.volumes.resolve(sb.id, c.config),
            sandbox_config=sb.config,
            image_config=image_config,
            rootfs=dirs.rootfs,
            namespaces=dict(sb.namespaces),
            pid_namespace=self._pid_namespace(c, sb),
            sandbox_dir=self.pods.files_dir(sb),
            shm=sb.shm if opts.ipc != pb.NODE else "",
            cgroups_path=c.cgroups_path,
            min_oom_score_adj=self._min_oom,
            hostname=pod_hostname(sb.config),
            sandbox_id=sb.id,
            image_name=c.image_name,
            image_id=c.image_id,
            rro_supported=self.handlers.supports_rro(c.handler),
        )
        mount: Mount = functools.partial(self.images.mount_rootfs, image)
        finish = None
        if ids is not None:  # idmapped layers, and bind mount sources, for the pod's user namespace
            userns_path, layers = sb.namespaces["user"], self.images.snapshot_dirs(image)
            root = (ids.uid.to_host(0), ids.gid.to_host(0))
            mount = functools.partial(idmap.mount_rootfs, layers, mapdir=dirs.idmap, userns_path=userns_path, root=root)

            def finish(spec: Spec) -> None:
                idmap.bind_sources(spec["mounts"], dirs.idmap, userns_path)

        self.store.update(c, rootfs_mounted=True)  # recorded first: recovery unmounts (and releases idmap/) if we die
        faults.step("CreateContainer.rootfs_recorded")
        spec = await asyncio.to_thread(make_bundle, dirs, mount, self.system.build_spec, inputs, finish)
        c.stop_signal = stop_signal(image_config, c.config.stop_signal)
        c.poststart_hooks = bool(spec.get("hooks", {}).get("poststart"))
        user = spec.get("process", {}).get("user", {})
        c.uid, c.gid, c.groups = user.get("uid", 0), user.get("gid", 0), list(user.get("additionalGids", []))
        if c.log_path:
            os.makedirs(os.path.dirname(c.log_path), exist_ok=True)
        c.pid = await self.handlers.runtime(c.handler).create(
            monitor.MonitorSpec(
                container_id=c.id,
                bundle=dirs.bundle,
                log_path=c.log_path,
                exit_dir=self.exits.watcher.directory,
                persist_dir=os.path.join(dirs.persist, "monitor"),
                socket_dir=os.path.join(self.config.state_dir, "attach"),
                tty=c.config.tty,
                stdin=c.config.stdin,
                stdin_once=c.config.stdin_once,
            ),
        )
        c.pid_start = self.system.start_time(c.pid)
        faults.step("CreateContainer.runtime_created")

    def _pid_namespace(self, c: Container, sb: Sandbox) -> str:
        """The PID namespace file the container joins ("" = a new one)."""
        cpid = c.config.linux.security_context.namespace_options
        if cpid.pid == pb.POD and sb.infra_pid > 0:
            if not self.system.same_process(sb.infra_pid, sb.infra_start):
                raise FailedPrecondition(
                    f"the infra process of pod {sb.id} is gone: its PID namespace cannot be joined"
                )
            return f"/proc/{sb.infra_pid}/ns/pid"
        if cpid.pid == pb.TARGET:
            target = self.store.find(cpid.target_id)
            if target is None or not self.system.same_process(target.pid, target.pid_start):
                raise NotFound(f"target container {cpid.target_id!r} for the PID namespace is not running")
            return f"/proc/{target.pid}/ns/pid"
        return ""

    # --- start --------------------------------------------------------------------

    async def start(self, cid: str) -> None:
        c = self.store.get(cid)
        sb = self.pods.store.find(c.sandbox_id)
        if sb is None or sb.state != PodState.READY:
            raise FailedPrecondition(f"the pod sandbox of container {c.id} is not ready")
        try:
            async with self.life.locks.hold(c.id):
                if c.state != State.CREATED:
                    raise FailedPrecondition(f"container {c.id} is {c.state.value}, not created")
                self.exits.event(c.id)
                started = time.time_ns()
                fifo_dir = "" if c.poststart_hooks else self.handlers.exec_fifo_dir(c.handler, c.id)
                if not (fifo_dir and await exec_fifo.start(fifo_dir, c.pid)):
                    await self.handlers.runtime(c.handler).start(c.id)
                faults.step("StartContainer.started")
                self.store.update(c, state=State.RUNNING, started_at=started)
                faults.step("StartContainer.running_recorded")
                self.events.publish(Kind.STARTED, sb, c.id)
        finally:
            self.exits.on_exit(c.id)  # it may have exited already, while `runtime start` ran (see Exits.on_exit)

    def _oom_killed(self, c: Container) -> bool:
        candidates = (os.path.join(self.persist(c.id), "monitor", "oom"), os.path.join(self.bundle(c.id), "oom"))
        return any(os.path.exists(p) for p in candidates)

    # --- stop, remove ----------------------------------------------------------------------

    async def stop(self, cid: str, timeout: int) -> None:  # noqa: ASYNC109 (the CRI field)
        """StopContainer: the stop signal, SIGKILL after ``timeout``; bounded; idempotent.
        Returns once the runtime has deleted the exited container, as containerd's does."""
        c = self.store.find(cid)
        if c is None or c.state == State.CREATING:
            return
        if c.state != State.EXITED:
            await self._stop(c, timeout)
        await self.exits.runtime_deleted(c.id)

    async def _stop(self, c: Container, timeout: int) -> None:  # noqa: ASYNC109
        runtime = self.handlers.runtime(c.handler)
        try:
            if timeout > 0:
                with contextlib.suppress(FailedPrecondition):
                    await runtime.kill(c.id, str(signal_number(c.stop_signal)))  # runc knows no RT signal names
                faults.step("StopContainer.signalled")
                if await self.exits.wait(c, timeout):
                    return
            with contextlib.suppress(FailedPrecondition):
                await runtime.kill(c.id, "KILL")
            faults.step("StopContainer.killed")
        except NotFound:
            # the runtime does not know it (its state is gone, e.g. after a reboot): nothing left to stop
            self.exits.on_exit(c.id)
            if not exited(c):
                self.exits.record(c, 255, time.time_ns(), "the OCI runtime no longer knows this container")
            return
        if await self.exits.wait(c, self.kill_wait):
            return
        # the runtime did not deliver: kill the process ourselves if it is still the one we started
        if self.system.same_process(c.pid, c.pid_start):
            with contextlib.suppress(ProcessLookupError):
                self.system.kill(c.pid, signal.SIGKILL)
            if await self.exits.wait(c, self.kill_wait):
                return
        log.error("container did not report an exit after SIGKILL; marking it exited", extra=fields(id=c.id))
        self.exits.record(c, 137, time.time_ns(), "the container did not report an exit after SIGKILL")

    async def _cleanup(self, c: Container) -> None:
        """Undo everything of a container on the system (not its record)."""
        if not await self.exits.runtime_deleted(c.id):  # else deleted at its exit
            with contextlib.suppress(NotFound, FailedPrecondition):
                await self.handlers.runtime(c.handler).delete(c.id)
        faults.step("RemoveContainer.runtime_deleted")
        conmon = self.system.live_monitor(self.bundle(c.id))
        if conmon:
            with contextlib.suppress(ProcessLookupError):
                self.system.kill(conmon, signal.SIGKILL)
        if c.rootfs_mounted:
            self.system.unmount(os.path.join(self.bundle(c.id), "rootfs"))
            await asyncio.to_thread(idmap.release, os.path.join(self.bundle(c.id), "idmap"))
            c.rootfs_mounted = False
            faults.step("RemoveContainer.rootfs_unmounted")
        await self.trash.discard(self.bundle(c.id), self.persist(c.id))  # renamed now, deleted in the background
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.attach_dir(c.id))  # conmon's symlink to the bundle (rmtree refuses links)
        self.exits.watcher.forget(c.id)

    async def remove(self, cid: str) -> None:
        """RemoveContainer: kills a running container first; idempotent."""
        c = self.store.find(cid)
        if c is None:
            return
        await self.life.settle(c.name)
        if c.state in (State.RUNNING, State.CREATED):
            await self.stop(c.id, 0)
        async with self.life.locks.hold(c.id):
            if c.id not in self.store.by_id:
                return
            await self._cleanup(c)
            self.store.delete(c)
            self.events.publish(Kind.DELETED, self.pods.store.by_id.get(c.sandbox_id), c.id)
            faults.step("RemoveContainer.record_deleted")
        self.exits.forget(c.id)
        self.usage.forget(c.id)
        await self.images.gc()  # its layers may belong to an image removed meanwhile
        log.info("container removed", extra=fields(id=c.id, name=c.name))

    async def _settle_creates(self, sb: Sandbox) -> None:
        """Let CreateContainer calls in flight for this pod finish first (a pod
        must not lose its namespaces under a container being created)."""
        await self.life.settle_all(c.name for c in self.store.of_sandbox(sb.id))

    async def stop_all(self, sb: Sandbox) -> None:
        """Stop every container of a pod (StopPodSandbox)."""
        await self._settle_creates(sb)
        await asyncio.gather(*(self.stop(c.id, 0) for c in self.store.of_sandbox(sb.id)))

    async def remove_all(self, sb: Sandbox) -> None:
        """Remove every container of a pod (RemovePodSandbox)."""
        await self._settle_creates(sb)
        await asyncio.gather(*(self.remove(c.id) for c in self.store.of_sandbox(sb.id)))
        if await self.volumes.release(sb.id):  # mounted for the pod's containers, gone with the pod
            await self.images.gc()  # their layers may belong to an image removed meanwhile

    # --- exec, logs, resources -------------------------------------------------------------

    async def exec_sync(self, cid: str, cmd: list[str], timeout: int) -> ExecResult:  # noqa: ASYNC109
        c = self.store.get(cid)
        if c.state != State.RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running")
        if not cmd:
            raise InvalidArgument("ExecSync: cmd is empty")
        return await exec_sync(self.handlers.runtime(c.handler), c.id, self.bundle(c.id), cmd, timeout)

    async def exec_stream(self, cid: str, cmd: list[str], stdio: Stdio) -> int:  # Exec: see exec_session.py
        if not cmd:
            raise InvalidArgument("Exec: cmd is empty")
        c = self._running(cid)
        return await run_exec(self.handlers.runtime(c.handler), c.id, self.bundle(c.id), cmd, stdio)

    async def attach(self, cid: str, stdio: Stdio) -> None:  # see attach.py for conmon's socket
        c = self._running(cid)
        sock = os.path.join(self.attach_dir(c.id), "attach")
        await attach_stdio(self.bundle(c.id), sock, stdio, c.config.stdin)

    def _running(self, cid: str) -> Container:
        c = self.store.get(cid)
        if c.state != State.RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running")
        return c

    async def reopen_log(self, cid: str) -> None:
        c = self.store.get(cid)
        if c.state != State.RUNNING:
            raise FailedPrecondition(f"container {c.id} is not running")
        if not c.log_path:
            return
        monitor.reopen_log(self.bundle(c.id))
        # conmon reopens asynchronously; answer once the new file exists, as kubelet then reads it
        await asyncio.to_thread(wait_for_file, c.log_path, REOPEN_WAIT)

    async def update_resources(self, cid: str, resources: pb.LinuxContainerResources) -> None:
        c = self.store.get(cid)
        if c.state not in (State.CREATED, State.RUNNING):
            raise FailedPrecondition(f"container {c.id} is {c.state.value}: resources can only change while it runs")
        spec = await asyncio.to_thread(read_json, os.path.join(self.bundle(c.id), "config.json"))
        doc = update_resources(spec, resources)
        await self.handlers.runtime(c.handler).update(c.id, doc, self.bundle(c.id))
        self.store.update(c, resources=resources.SerializeToString())

    async def checkpoint(self, cid: str, location: str, timeout: int) -> None:  # noqa: ASYNC109 (the CRI field)
        await checkpoint.checkpoint(self, cid, location, timeout)  # the container keeps running

    async def stats(self, containers: list[Container]) -> list[tuple[Container, Usage, int | None]]:
        """Usage of each container, with CPU use in nanocores since the last sample."""
        return await self.usage.sample(containers, lambda c: os.path.join(self.persist(c.id), "upper"))

    # --- reads ---------------------------------------------------------------------------

    def ids(self) -> KeysView[str]:
        """The ids of every container record, a live view (what the server's list caches keep)."""
        return self.store.by_id.keys()

    def generation(self) -> int:
        """Moves at every change of a container record: a list reply is good until it does."""
        return self.store.generation

    def records(self) -> list[Container]:
        """Every container record, copied in one step (the metrics scrape runs in another thread)."""
        return list(self.store.by_id.values())

    def of_pod(self, sandbox_id: str) -> list[Container]:
        """The pod's container records (events and pod stats carry their statuses)."""
        return self.store.of_sandbox(sandbox_id)

    def get(self, cid: str) -> Container:
        return self.store.get(cid)

    def list(self, filt: pb.ContainerFilter | pb.ContainerStatsFilter | None) -> list[Container]:
        """Containers matching a ListContainers or ListContainerStats filter (ids by prefix)."""
        return self.store.matching(filt)

    # --- recovery ---------------------------------------------------------------------------

    async def drain(self, seconds: float) -> None:
        """At shutdown: let CreateContainer work and runtime deletes in flight finish (or undo themselves)."""
        await self.life.drain(seconds)
        await self.exits.drain(seconds)

    def close(self) -> None:
        """At shutdown, after drain: stop watching for exits (conmon keeps recording them)."""
        self.exits.watcher.close()

    async def recover(self) -> None:
        """After a restart: exits that happened meanwhile, half-made containers."""
        self.exits.watcher.start()
        await self.volumes.recover(set(self.pods.ids()))
        for c in list(self.store.by_id.values()):
            if c.state == State.CREATING:
                try:
                    await self._cleanup(c)
                except Exception as exc:
                    log.warning(
                        "half-made container not cleaned up; kept for removal", extra=fields(id=c.id, error=str(exc))
                    )
                    self.exits.record(c, 255, time.time_ns(), "crid stopped while creating it")
                    continue
                self.store.delete(c)
            elif c.state in (State.CREATED, State.RUNNING):
                await checkpoint.recover(self.handlers.runtime(c.handler), c, self.persist(c.id))
                await self.exits.reconcile(c, self.bundle(c.id))
