"""Pod sandboxes: run, stop, remove, look up, and recover after a restart.

RunPodSandbox records the pod (state ``creating``) before it touches the
system, then: cgroup, namespaces (pinned, no pause image), CNI ADD, sysctls,
hostname/hosts/resolv.conf, /dev/shm, and the infra process when the pod
shares a PID namespace. Any failure undoes every step. The work runs in its
own task, so a kubelet whose deadline expires does not interrupt it; a retry
with the same name and config gets the same sandbox.
"""

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import Awaitable, Callable, KeysView
from typing import Any

from cri import faults
from cri.api.v1 import api_pb2 as pb
from cri.cni import CniManager
from cri.conditions import Condition
from cri.config import Config
from cri.errors import FailedPrecondition, NotFound, quote
from cri.log import fields
from cri.runtime import infra, namespaces, pod_resources, podfiles, userns
from cri.runtime.events import EventBus, Kind
from cri.runtime.handlers import Handlers
from cri.runtime.lifecycle import Lifecycle, Steps
from cri.runtime.pod_config import bandwidth as bandwidth
from cri.runtime.pod_config import host_network as host_network
from cri.runtime.pod_config import ns_options, pod_network
from cri.runtime.pod_config import pod_hostname as pod_hostname
from cri.runtime.pod_config import reserved_name as reserved_name
from cri.runtime.pod_config import validate as validate
from cri.runtime.portforward import forward
from cri.runtime.sandbox_store import Sandbox, SandboxStore, State, new_id
from cri.runtime.stdio import Duplex
from cri.runtime.system import System
from cri.store import Store

log = logging.getLogger(__name__)

ContainerHook = Callable[[Sandbox], Awaitable[None]]


async def _no_containers(sb: Sandbox) -> None:
    return None


class Pods:
    def __init__(
        self,
        config: Config,
        store: Store,
        cni: CniManager,
        handlers: Handlers,
        events: EventBus | None = None,
        system: System | None = None,
    ) -> None:
        self.config = config
        self.cni = cni
        self.handlers = handlers
        self.system = system if system is not None else System()
        self.events = events if events is not None else EventBus()
        self.store = SandboxStore(store)
        self.life = Lifecycle(self.store)
        # stop / remove every container of a pod: the daemon wires in Containers.stop_all / remove_all
        self.stop_containers: ContainerHook = _no_containers
        self.remove_containers: ContainerHook = _no_containers

    # --- helpers -----------------------------------------------------------------

    def files_dir(self, sb: Sandbox) -> str:
        return os.path.join(self.config.root_dir, "sandboxes", sb.id)

    def state_dir(self, sb: Sandbox) -> str:
        return os.path.join(self.config.state_dir, "sandboxes", sb.id)

    def _cgroups_in_use(self, other_than: Sandbox) -> set[str]:
        """Cgroup directories crid made that pods other than ``other_than`` still list."""
        return {d for s in self.store.by_id.values() if s is not other_than for d in s.cgroups}

    @staticmethod
    async def _ns(fn: Callable[..., object], *args: object) -> object:
        return await asyncio.get_running_loop().run_in_executor(namespaces.EXECUTOR, fn, *args)

    # --- RunPodSandbox ----------------------------------------------------------------

    async def run(self, config: pb.PodSandboxConfig, handler: str) -> str:
        validate(config)
        self.handlers.runtime(handler)
        if userns.mapping(ns_options(config)) is not None and not self.handlers.supports_userns(handler):
            which = handler or self.config.runtime.default_handler
            raise FailedPrecondition(f"runtime handler {quote(which)} cannot run pods in user namespaces here")
        name = reserved_name(config.metadata)
        fingerprint = hashlib.sha256(config.SerializeToString(deterministic=True) + handler.encode()).hexdigest()
        joined = await self.life.reserve(
            name, fingerprint, lambda sb: f"pod sandbox name {name!r} is already reserved for sandbox {sb.id}"
        )
        if joined is not None:
            return joined
        sb = Sandbox(
            id=new_id(),
            name=name,
            fingerprint=fingerprint,
            handler=handler,
            state=State.CREATING,
            created_at=time.time_ns(),
            config=config,
        )
        self.store.add(sb)
        faults.step("RunPodSandbox.recorded")
        return await self.life.launch(name, self._create(sb))

    async def _create(self, sb: Sandbox) -> str:
        started = time.monotonic()
        await self.life.attempt(sb.id, lambda: self._make(sb), lambda exc: self._failed(sb, exc))
        log.info(
            "pod sandbox ready",
            extra=fields(id=sb.id, name=sb.name, ips=sb.ips, seconds=round(time.monotonic() - started, 4)),
        )
        return sb.id

    async def _make(self, sb: Sandbox) -> None:
        await self._setup(sb, sb.config, ns_options(sb.config))
        self.store.update(sb, state=State.READY)
        faults.step("RunPodSandbox.ready_recorded")
        self.events.publish(Kind.CREATED, sb)
        self.events.publish(Kind.STARTED, sb)

    async def _failed(self, sb: Sandbox, exc: BaseException) -> None:
        log.info("pod sandbox failed, undoing", extra=fields(id=sb.id, name=sb.name, error=str(exc)))
        await self._undo(sb)

    async def _undo(self, sb: Sandbox) -> None:
        """Undo a pod that could not be made. If that fails too, the record stays
        (not ready) so that RemovePodSandbox, or the next start, can finish it."""
        try:
            await self._release(sb, final=True)
        except Exception as exc:
            log.warning("pod sandbox undo incomplete; kept for removal", extra=fields(id=sb.id, error=str(exc)))
            self.store.update(sb, state=State.NOTREADY)
            return
        self.store.delete(sb)

    async def _setup(self, sb: Sandbox, config: pb.PodSandboxConfig, opts: pb.NamespaceOption) -> None:
        files, state = self.files_dir(sb), self.state_dir(sb)
        os.makedirs(files, mode=0o711, exist_ok=True)
        os.makedirs(state, mode=0o711, exist_ok=True)
        hostnet = opts.network == pb.NODE
        if config.linux.cgroup_parent:
            # recorded before they are made, as the namespaces below: recovery removes them if we die midway
            planned = self.system.plan_cgroups(config.linux.cgroup_parent, self._cgroups_in_use(sb))
            self.store.update(sb, cgroups=planned)
            faults.step("RunPodSandbox.cgroups_planned")
            in_use = self._cgroups_in_use(sb)
            made = await asyncio.to_thread(self.system.ensure_cgroups, config.linux.cgroup_parent, in_use)
            faults.step("RunPodSandbox.cgroups_made")
            self.store.update(sb, cgroups=made)
            faults.step("RunPodSandbox.cgroups_recorded")
        kinds = ([] if hostnet else ["net", "uts"]) + ([] if opts.ipc == pb.NODE else ["ipc"])
        hostname = pod_hostname(config)
        ids = userns.mapping(opts)
        if ids is not None:
            for path in (self.config.state_dir, self.config.root_dir):
                userns.check_reachable(path)
        # before creating: recovery unmounts these paths if we die midway
        pinned = kinds if ids is None else ["user", *kinds]
        self.store.update(sb, namespaces={k: os.path.join(state, k) for k in pinned})
        faults.step("RunPodSandbox.namespaces_recorded")
        if ids is None:
            await self._ns(self.system.create_namespaces, state, kinds, hostname)
        else:
            await self._ns(self.system.create_user_namespaces, state, kinds, hostname, ids)
        faults.step("RunPodSandbox.namespaces_made")
        if opts.ipc != pb.NODE:
            self.store.update(sb, shm=os.path.join(state, "shm"))
            faults.step("RunPodSandbox.shm_recorded")
            self.system.mount_shm(sb.shm)
            faults.step("RunPodSandbox.shm_mounted")
        # the network and the infra process only share the pinned namespaces: set them up side by side
        results = await asyncio.gather(
            self._setup_network(sb, hostnet), self._start_infra(sb, opts), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        if config.linux.sysctls:  # after CNI: per-interface keys need eth0
            await self._ns(self.system.apply_sysctls, sb.namespaces, dict(config.linux.sysctls))
        dns = None
        if config.HasField("dns_config"):
            d = config.dns_config
            dns = podfiles.DnsConfig(tuple(d.servers), tuple(d.searches), tuple(d.options))
        await asyncio.to_thread(self.system.write_pod_files, files, hostname, sb.ips, dns, hostnet)

    async def _setup_network(self, sb: Sandbox, hostnet: bool) -> None:
        if hostnet:
            return
        self.store.update(sb, network_added=True)
        faults.step("RunPodSandbox.network_recorded")
        result = await self.cni.setup(pod_network(sb))
        faults.step("RunPodSandbox.cni_result_cached")
        self.store.update(sb, ips=list(result.ips))
        faults.step("RunPodSandbox.ips_recorded")

    async def _start_infra(self, sb: Sandbox, opts: pb.NamespaceOption) -> None:
        if opts.pid != pb.POD:
            return
        runtime = self.handlers.runtime(sb.handler)
        rootfs = self.system.infra_rootfs(self.config.root_dir)
        cg = sb.config.linux.cgroup_parent.rstrip("/")
        cgroups_path = f"{cg}/{infra.infra_id(sb.id)}" if cg else ""
        self.store.update(sb, infra_pid=-1)  # marks "infra may exist" for recovery
        faults.step("RunPodSandbox.infra_recorded")
        bundle = os.path.join(self.state_dir(sb), "infra")
        ids = userns.mapping(opts)
        maps = None if ids is None else userns.oci_maps(ids)
        pid = await infra.start(runtime, bundle, infra.infra_id(sb.id), rootfs, dict(sb.namespaces), cgroups_path, maps)
        faults.step("RunPodSandbox.infra_started")
        self.store.update(sb, infra_pid=pid, infra_start=self.system.start_time(pid))
        faults.step("RunPodSandbox.infra_pid_recorded")

    # --- teardown -------------------------------------------------------------------

    async def _stop_pod(self, sb: Sandbox) -> None:
        """What StopPodSandbox undoes: containers, infra, network, /dev/shm.

        Every step runs even when an earlier one fails (a half-made pod has
        half of everything); the first error is raised at the end."""
        steps = Steps(sb.id, "pod teardown step failed", log)
        await steps.run("stop containers", self.stop_containers(sb))
        if sb.infra_pid:
            stop_infra = infra.stop(self.handlers.runtime(sb.handler), infra.infra_id(sb.id))
            if await steps.run("stop infra", stop_infra):
                sb.infra_pid = 0
                faults.step("StopPodSandbox.infra_deleted")
        if sb.network_added:
            netns = sb.namespaces.get("net")
            teardown = self.cni.teardown(sb.id, netns if netns and self.system.is_pinned(netns) else None)
            if await steps.run("CNI DEL", teardown):
                sb.network_added = False
                faults.step("StopPodSandbox.network_removed")
        remove_netns = self.system.remove_namespaces
        if "net" in sb.namespaces and await steps.run("netns", self._ns(remove_netns, [sb.namespaces["net"]])):
            sb.namespaces.pop("net")
            faults.step("StopPodSandbox.netns_removed")
        if sb.shm and steps.call("/dev/shm", self.system.unmount, sb.shm):
            sb.shm = ""
            faults.step("StopPodSandbox.shm_unmounted")
        steps.raise_first()

    async def _release(self, sb: Sandbox, final: bool) -> None:
        """Undo everything of a pod (``final``: also its files and cgroups)."""
        steps = Steps(sb.id, "pod teardown step failed", log)
        await steps.run("stop", self._stop_pod(sb))
        if final:
            await steps.run("remove containers", self.remove_containers(sb))
            if await steps.run("namespaces", self._ns(self.system.remove_namespaces, list(sb.namespaces.values()))):
                sb.namespaces = {}
                faults.step("RemovePodSandbox.namespaces_removed")
            mine = [d for d in sb.cgroups if d not in self._cgroups_in_use(sb)]
            if mine and await steps.run("cgroups", asyncio.to_thread(self.system.remove_cgroups, mine)):
                sb.cgroups = []
                faults.step("RemovePodSandbox.cgroups_removed")
            shutil.rmtree(self.state_dir(sb), ignore_errors=True)
            shutil.rmtree(self.files_dir(sb), ignore_errors=True)
        steps.raise_first()

    async def stop(self, sandbox_id: str) -> None:
        """StopPodSandbox: idempotent, an unknown pod is fine."""
        sb = self.store.find(sandbox_id)
        if sb is None:
            return
        await self.life.settle(sb.name)  # still being created: let that finish (or fail) first
        async with self.life.locks.hold(sb.id):
            if sb.id not in self.store.by_id:
                return
            ready = sb.state == State.READY
            # recorded first: a stop cut short (a crash, a failed step) is not ready
            self.store.update(sb, state=State.NOTREADY)
            faults.step("StopPodSandbox.notready_recorded")
            try:
                await self._stop_pod(sb)
            finally:
                self.store.save(sb)  # what the teardown undid, all of it or not
                faults.step("StopPodSandbox.teardown_recorded")
                if ready:  # a repeated stop changes nothing
                    self.events.publish(Kind.STOPPED, sb)
        log.info("pod sandbox stopped", extra=fields(id=sb.id, name=sb.name))

    async def remove(self, sandbox_id: str) -> None:
        """RemovePodSandbox: stops what still runs, removes everything; idempotent."""
        sb = self.store.find(sandbox_id)
        if sb is None:
            return
        await self.life.settle(sb.name)
        async with self.life.locks.hold(sb.id):
            if sb.id not in self.store.by_id:
                return
            await self._release(sb, final=True)
            if sb.state == State.READY:  # removed without a stop first: the event stream still tells the stop
                sb.state = State.NOTREADY
                self.events.publish(Kind.STOPPED, sb)
            self.store.delete(sb)
            self.events.publish(Kind.DELETED, sb)
            faults.step("RemovePodSandbox.record_deleted")
        log.info("pod sandbox removed", extra=fields(id=sb.id, name=sb.name))

    # --- reads -------------------------------------------------------------------------

    def ids(self) -> KeysView[str]:
        """The ids of every pod record, a live view (what the server's list caches keep)."""
        return self.store.by_id.keys()

    def generation(self) -> int:
        """Moves at every change of a pod record: a list reply is good until it does."""
        return self.store.generation

    def records(self) -> list[Sandbox]:
        """Every pod record, copied in one step (the metrics scrape runs in another thread)."""
        return list(self.store.by_id.values())

    def network_status(self) -> Condition:
        """NetworkReady: whether CNI has a usable config."""
        return self.cni.status()

    def network_result(self, sandbox_id: str) -> dict[str, Any] | None:
        """The pod's CNI result as the plugin gave it, None when it has none."""
        r = self.cni.cached(sandbox_id)
        return r.raw if r is not None else None

    def update_pod_cidrs(self, cidrs: list[str]) -> None:
        """The node's pod CIDRs from kubelet (UpdateRuntimeConfig)."""
        self.cni.update_pod_cidrs(cidrs)

    async def clear_partial_network_writes(self) -> None:
        """At startup: CNI cache files a killed daemon left half written."""
        await self.cni.clear_partial_writes()

    def record_resources(
        self, sb: Sandbox, overhead: pb.LinuxContainerResources, resources: pb.LinuxContainerResources
    ) -> None:
        """UpdatePodSandboxResources: the pod's new overhead and resources, written."""
        pod_resources.record(sb, overhead, resources)
        self.store.save(sb)

    def get(self, sandbox_id: str) -> Sandbox:
        sb = self.store.get(sandbox_id)
        if sb.state == State.CREATING:
            raise NotFound(f"pod sandbox {sandbox_id!r} is still being created")
        return sb

    async def port_forward(self, sandbox_id: str, port: int, stream: Duplex) -> None:
        """PortForward (see portforward.py); a host-network pod is dialed on the host."""
        sb = self.get(sandbox_id)
        hostnet = host_network(sb.config)
        if sb.state != State.READY or not (hostnet or "net" in sb.namespaces):
            raise FailedPrecondition(f"pod sandbox {sb.id} is not ready")
        await forward(None if hostnet else sb.namespaces["net"], port, stream)

    def list(self, filt: pb.PodSandboxFilter | None) -> list[Sandbox]:
        return self.store.matching(filt)

    # --- recovery ------------------------------------------------------------------------

    async def drain(self, seconds: float) -> None:
        """At shutdown: let RunPodSandbox work in flight finish (or undo itself)
        before the store closes."""
        await self.life.drain(seconds)

    async def recover(self) -> None:
        """After a restart: undo half-made pods; pods whose namespaces vanished
        (a reboot wiped the state dir) are no longer ready."""
        for sb in list(self.store.by_id.values()):
            if sb.state == State.CREATING:
                log.info("cleaning up a pod sandbox a killed daemon left half made", extra=fields(id=sb.id))
                await self._undo(sb)
            elif sb.state == State.READY and not all(self.system.is_pinned(p) for p in sb.namespaces.values()):
                log.info("pod sandbox lost its namespaces; marking it not ready", extra=fields(id=sb.id))
                with contextlib.suppress(Exception):
                    await self._stop_pod(sb)
                self.store.update(sb, state=State.NOTREADY)
                self.events.publish(Kind.STOPPED, sb)
        # networks cached for pods crid has no record of (a record lost with a failed undo): release them
        for pod_id in set(await self.cni.cached_pods()) - set(self.store.by_id):
            log.info("releasing the network of a pod crid no longer knows", extra=fields(id=pod_id))
            with contextlib.suppress(Exception):
                await self.cni.teardown(pod_id, None)
