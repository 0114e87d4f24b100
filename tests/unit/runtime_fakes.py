"""Fakes for driving Pods and Containers without root: an OCI runtime (the
``Runtime`` protocol), the host calls (``System``), CNI and images. Each keeps
the world it pretends to change (mounts, namespaces, cgroups, networks,
runtime containers), so a test checks that nothing is left; ``fail`` makes a
named call raise, ``hold`` makes it wait until released."""

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from cri.api.v1 import api_pb2 as pb
from cri.cni import PodNetwork
from cri.conditions import Condition
from cri.config import Config
from cri.images.metadata import ImageRecord
from cri.runtime.containers import Containers
from cri.runtime.events import EventBus
from cri.runtime.handlers import Handlers
from cri.runtime.monitor import MonitorSpec
from cri.runtime.pods import Pods
from cri.runtime.spec import SpecInputs
from cri.runtime.spec.types import Spec
from cri.runtime.system import System
from cri.store import Store


class Injected(Exception):
    """What a failing fake raises."""


class Faults:
    """Which fake calls fail or wait; every call is logged by name."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail: set[str] = set()
        self.holds: dict[str, asyncio.Event] = {}

    def hold(self, name: str) -> asyncio.Event:
        """The call waits until the returned event is set."""
        self.holds[name] = asyncio.Event()
        return self.holds[name]

    def check(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise Injected(name)

    async def acheck(self, name: str) -> None:
        self.check(name)
        if name in self.holds:
            await self.holds[name].wait()


@dataclass
class World:
    """What the fakes pretend exists on the host."""

    namespaces: set[str] = field(default_factory=set)
    mounts: set[str] = field(default_factory=set)
    cgroups: set[str] = field(default_factory=set)
    networks: set[str] = field(default_factory=set)
    processes: dict[int, int] = field(default_factory=dict)  # pid -> start time
    monitors: dict[str, int] = field(default_factory=dict)  # bundle -> conmon pid
    kills: list[tuple[int, int]] = field(default_factory=list)  # (pid, signal) sent by crid itself

    def leftovers(self) -> dict[str, object]:
        """Everything still there; {} when nothing is."""
        parts: dict[str, object] = {"namespaces": self.namespaces, "mounts": self.mounts, "cgroups": self.cgroups}
        parts |= {"networks": self.networks, "processes": self.processes}
        return {k: v for k, v in parts.items() if v}


class FakeSystem(System):
    def __init__(self, world: World, faults: Faults) -> None:
        self.world = world
        self.faults = faults
        self.on_kill: Callable[[int, int], None] = lambda pid, sig: None  # the process's reaction

    def create_namespaces(self, directory: str, kinds: list[str], hostname: str) -> dict[str, str]:
        self.faults.check("create_namespaces")
        paths = {k: os.path.join(directory, k) for k in kinds}
        self.world.namespaces |= set(paths.values())
        return paths

    def create_user_namespaces(self, directory: str, kinds: list[str], hostname: str, ids: Any) -> dict[str, str]:
        return self.create_namespaces(directory, ["user", *kinds], hostname)

    def remove_namespaces(self, paths: list[str]) -> None:
        self.faults.check("remove_namespaces")
        self.world.namespaces -= set(paths)

    def is_pinned(self, path: str) -> bool:
        return path in self.world.namespaces

    def apply_sysctls(self, paths: dict[str, str], sysctls: dict[str, str]) -> None:
        self.faults.check("apply_sysctls")

    def mount_shm(self, path: str) -> None:
        self.faults.check("mount_shm")
        self.world.mounts.add(path)

    def unmount(self, path: str) -> None:
        self.faults.check("unmount")
        self.world.mounts.discard(path)

    def write_pod_files(self, directory: str, hostname: str, ips: list[str], dns: Any, host_network: bool) -> None:
        self.faults.check("write_pod_files")

    def infra_rootfs(self, root_dir: str) -> str:
        return os.path.join(root_dir, "infra", "rootfs")

    def plan_cgroups(self, cgroup_parent: str, shared: set[str]) -> list[str]:
        self.faults.check("plan_cgroups")
        return [f"/sys/fs/cgroup/{cgroup_parent.strip('/')}"]

    def ensure_cgroups(self, cgroup_parent: str, shared: set[str]) -> list[str]:
        self.faults.check("ensure_cgroups")
        made = self.plan_cgroups(cgroup_parent, shared)
        self.world.cgroups |= set(made)
        return made

    def remove_cgroups(self, created: list[str]) -> None:
        self.faults.check("remove_cgroups")
        self.world.cgroups -= set(created)

    def start_time(self, pid: int) -> int:
        return self.world.processes.get(pid, 0)

    def same_process(self, pid: int, started: int) -> bool:
        return pid > 0 and started > 0 and self.world.processes.get(pid) == started

    def kill(self, pid: int, sig: int) -> None:
        self.world.kills.append((pid, sig))
        if pid not in self.world.processes:
            raise ProcessLookupError(pid)
        self.on_kill(pid, sig)

    def live_monitor(self, bundle: str) -> int:
        return self.world.monitors.get(bundle, 0)

    def oom_score_adj(self) -> int:
        return 0

    def build_spec(self, inputs: SpecInputs) -> Spec:
        self.faults.check("build_spec")
        return cast(Spec, {"process": {"args": ["sh"], "user": {"uid": 1000, "gid": 1000}, "env": []}, "linux": {}})


@dataclass
class FakeContainer:
    bundle: str
    pid: int
    exit_dir: str = ""
    status: str = "created"


class FakeRuntime:
    """The ``Runtime`` protocol over a dict of containers. ``deliver`` says which
    kill signals end a container (its monitor then writes the exit file)."""

    def __init__(self, world: World, faults: Faults) -> None:
        self.world = world
        self.faults = faults
        self.containers: dict[str, FakeContainer] = {}
        self.kills: list[tuple[str, str]] = []
        self.deletes: list[str] = []
        self.deliver: dict[str, int] = {"15": 0, "KILL": 137}  # signal -> exit code
        self.pid_kills_work = True
        self._next_pid = 1000

    @property
    def name(self) -> str:
        return "fake"

    def _spawn(self) -> int:
        self._next_pid += 1
        self.world.processes[self._next_pid] = 5_000 + self._next_pid
        return self._next_pid

    async def create(self, spec: MonitorSpec) -> int:
        await self.faults.acheck("runtime.create")
        pid = self._spawn()
        self.containers[spec.container_id] = FakeContainer(spec.bundle, pid, spec.exit_dir)
        return pid

    async def run_detached(self, container_id: str, bundle: str, pid_file: str) -> None:
        await self.faults.acheck("runtime.run_detached")
        pid = self._spawn()
        self.containers[container_id] = FakeContainer(bundle, pid, status="running")
        Path(pid_file).write_text(f"{pid}\n")  # noqa: ASYNC240 (a small file in a test)

    async def start(self, container_id: str) -> None:
        await self.faults.acheck("runtime.start")
        self.containers[container_id].status = "running"

    async def state(self, container_id: str) -> dict[str, object] | None:
        c = self.containers.get(container_id)
        return {"id": container_id, "status": c.status, "pid": c.pid} if c is not None else None

    async def kill(self, container_id: str, signal: str = "KILL") -> None:
        await self.faults.acheck("runtime.kill")
        self.kills.append((container_id, signal))
        c = self.containers.get(container_id)
        if c is not None and c.status == "running" and signal in self.deliver:
            self.exit(container_id, self.deliver[signal])

    def pid_killed(self, pid: int, sig: int) -> None:
        """crid killed a container's process itself; it ends when ``pid_kills_work``."""
        for cid, c in self.containers.items():
            if c.pid == pid and self.pid_kills_work:
                self.exit(cid, 128 + sig)

    def exit(self, container_id: str, code: int) -> None:
        """The container's process ends; its monitor writes the exit file."""
        c = self.containers[container_id]
        c.status = "stopped"
        self.world.processes.pop(c.pid, None)
        if c.exit_dir:
            Path(c.exit_dir, container_id).write_text(str(code))

    async def delete(self, container_id: str) -> None:
        await self.faults.acheck("runtime.delete")
        self.deletes.append(container_id)
        c = self.containers.pop(container_id, None)
        if c is not None:
            self.world.processes.pop(c.pid, None)

    async def update(self, container_id: str, resources: Mapping[str, object], scratch_dir: str) -> None:
        self.faults.check("runtime.update")

    def exec_command(self, container_id: str, process_path: str, pid_path: str | None) -> list[str]:
        return ["true"]

    async def features(self) -> dict[str, object]:
        return {}

    async def pause(self, container_id: str) -> None:
        await self.faults.acheck("runtime.pause")
        self.containers[container_id].status = "paused"

    async def resume(self, container_id: str) -> None:
        await self.faults.acheck("runtime.resume")
        self.containers[container_id].status = "running"

    async def checkpoint(self, container_id: str, image_dir: str, work_dir: str, time_limit: float) -> None:
        """What CRIU leaves: images, and its log in the work dir (also when it fails)."""
        Path(work_dir, "dump.log").write_text("(00.01) Dumping\nError (criu/cr-dump.c:1): fake dump failure\n")  # noqa: ASYNC240
        await self.faults.acheck("runtime.checkpoint")
        for name in ("inventory.img", "pages-1.img"):
            Path(image_dir, name).write_bytes(b"criu image " + container_id.encode())  # noqa: ASYNC240


@dataclass
class FakeNetworkResult:
    ips: tuple[str, ...]
    raw: dict[str, Any]


class FakeCni:
    def __init__(self, world: World, faults: Faults) -> None:
        self.world = world
        self.faults = faults

    async def setup(self, pod: PodNetwork) -> FakeNetworkResult:
        await self.faults.acheck("cni.setup")
        self.world.networks.add(pod.id)
        return FakeNetworkResult(("10.0.0.2",), {"ips": [{"address": "10.0.0.2/24"}]})

    async def teardown(self, pod_id: str, netns: str | None) -> None:
        await self.faults.acheck("cni.teardown")
        self.world.networks.discard(pod_id)

    async def cached_pods(self) -> list[str]:
        return sorted(self.world.networks)

    def cached(self, pod_id: str) -> FakeNetworkResult | None:
        return None

    def status(self) -> Condition:
        return Condition(True)

    def update_pod_cidrs(self, cidrs: list[str]) -> None:
        pass

    async def clear_partial_writes(self) -> None:
        pass


IMAGE = ImageRecord(
    id="sha256:" + "1" * 64, manifest_digest="sha256:" + "2" * 64,
    manifest_media_type="application/vnd.oci.image.manifest.v1+json", size=1, uid=None, username="",
    chain_ids=["sha256:" + "3" * 64], blobs=[], created_at=1, tags=["busybox:1"],
)  # fmt: skip


class FakeMeta:
    def __init__(self) -> None:
        self.images = {IMAGE.id: IMAGE}


class FakeImages:
    def __init__(self, world: World, faults: Faults) -> None:
        self.world = world
        self.faults = faults
        self.meta = FakeMeta()

    def find(self, text: str) -> ImageRecord | None:
        return IMAGE if text in ("busybox:1", IMAGE.id) else None

    def layer_dirs(self, chain_ids: list[str]) -> list[str]:
        return []

    def mount_rootfs(self, image: ImageRecord, target: str, upper: str, work: str) -> None:
        self.faults.check("mount_rootfs")
        self.world.mounts.add(target)

    def config_of(self, image: ImageRecord) -> dict[str, Any]:
        return {"config": {"Cmd": ["sh"]}}

    async def gc(self) -> None:
        pass


class Node:
    """A crid's domain on fakes: Pods and Containers on one store under ``tmp``."""

    def __init__(
        self, tmp: Path, world: World | None = None, faults: Faults | None = None, runtime: FakeRuntime | None = None
    ) -> None:
        self.tmp = tmp
        for d in ("root", "state"):
            (tmp / d).mkdir(exist_ok=True)
        self.world = world if world is not None else World()
        self.faults = faults if faults is not None else Faults()
        self.config = Config(root_dir=str(tmp / "root"), state_dir=str(tmp / "state"))
        self.runtime = runtime if runtime is not None else FakeRuntime(self.world, self.faults)
        self.system = FakeSystem(self.world, self.faults)
        self.cni = FakeCni(self.world, self.faults)
        self.images = FakeImages(self.world, self.faults)
        self.store = Store(self.config.root_dir)
        handlers = Handlers(self.config, lambda name, binary, root: self.runtime)
        self.events = EventBus()  # one bus for both, as the daemon's
        self.pods = Pods(self.config, self.store, self.cni, handlers, self.events, self.system)  # type: ignore[arg-type]
        images: Any = self.images  # not an Images: what Containers asks of one
        self.containers = Containers(self.config, self.store, self.pods, images, handlers, self.events, self.system)
        self.containers.kill_wait = 0.2
        self.system.on_kill = self.runtime.pid_killed
        self.pods.stop_containers = self.containers.stop_all  # as the daemon wires them
        self.pods.remove_containers = self.containers.remove_all

    async def start(self) -> None:
        """What the daemon does before it serves: recovery (it starts the exit watcher)."""
        await self.containers.recover()
        await self.pods.recover()

    async def close(self) -> None:
        await self.containers.trash.drain(5)
        self.containers.close()
        self.store.close()

    def reopened(self) -> "Node":
        """A new daemon on the same state and the same world (after a crash)."""
        return Node(self.tmp, self.world, self.faults, self.runtime)


def pod_config(name: str = "p", **linux: Any) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=f"uid-{name}", namespace="ns", attempt=0),
        linux=pb.LinuxPodSandboxConfig(**linux),
    )


def full_pod_config(name: str = "p") -> pb.PodSandboxConfig:
    """A pod that needs every RunPodSandbox step: cgroup parent, shared PID namespace (infra), sysctls."""
    return pod_config(
        name,
        cgroup_parent="/kubepods/pod1",
        sysctls={"net.ipv4.ip_forward": "1"},
        security_context=pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(pid=pb.POD)),
    )


def container_config(name: str = "c", **fields: Any) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0), image=pb.ImageSpec(image="busybox:1"), **fields
    )
