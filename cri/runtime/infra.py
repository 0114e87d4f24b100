"""The infra process of a pod that shares one PID namespace.

When a pod asks for ``namespace_options.pid = POD``, crid starts Debian's
``catatonit -P`` through the pod's OCI runtime as PID 1 of a new PID
namespace, joined to the pod's net/ipc/uts namespaces, in a read-only rootfs
that holds nothing but that static binary. It reaps zombies; the pod's
containers join its PID namespace through ``/proc/<pid>/ns/pid``. No image
and no pull are needed.
"""

import asyncio
import json
import os
import shutil
import tempfile

from cri import faults
from cri.runtime.oci import Runtime

CATATONIT = "/usr/bin/catatonit"


def infra_id(sandbox_id: str) -> str:
    return f"{sandbox_id}-infra"


def ensure_rootfs(root_dir: str) -> str:
    """A shared read-only rootfs: /catatonit plus mount points."""
    rootfs = os.path.join(root_dir, "infra", "rootfs")
    binary = os.path.join(rootfs, "catatonit")
    if not os.path.exists(binary):
        for d in ("proc", "dev", "sys"):
            os.makedirs(os.path.join(rootfs, d), exist_ok=True)
        # a tmp file of its own: callers race here (the handlers' startup probes run side by side)
        fd, tmp = tempfile.mkstemp(prefix=".catatonit-", dir=rootfs)
        os.close(fd)
        shutil.copy2(CATATONIT, tmp)
        os.rename(tmp, binary)
    return rootfs


def spec(
    rootfs: str, namespaces: dict[str, str], cgroups_path: str, id_maps: dict[str, object] | None = None
) -> dict[str, object]:
    """OCI config of the infra process; ``namespaces`` maps net/ipc/uts/user to pinned
    files (absent kinds stay the host's); ``id_maps``: the user namespace's
    uidMappings and gidMappings."""
    kinds = {"net": "network", "ipc": "ipc", "uts": "uts", "user": "user"}
    ns: list[dict[str, str]] = [{"type": "pid"}, {"type": "mount"}]
    ns += [{"type": kinds[k], "path": p} for k, p in namespaces.items()]
    linux: dict[str, object] = {
        "namespaces": ns,
        "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
        "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"],
        **(id_maps or {}),
    }
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 65535, "gid": 65535},
            "args": ["/catatonit", "-P"],
            "env": ["PATH=/"],
            "cwd": "/",
            "capabilities": {"bounding": [], "effective": [], "permitted": [], "ambient": []},
            "noNewPrivileges": True,
        },
        "root": {"path": rootfs, "readonly": True},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755", "size=64k"]},
        ],
        "linux": linux,
    }


async def start(
    runtime: Runtime,
    bundle: str,
    container_id: str,
    rootfs: str,
    namespaces: dict[str, str],
    cgroups_path: str,
    id_maps: dict[str, object] | None = None,
) -> int:
    """Run the infra process detached; returns its host pid."""
    pid_file = os.path.join(bundle, "infra.pid")
    await asyncio.to_thread(_write_bundle, bundle, spec(rootfs, namespaces, cgroups_path, id_maps))
    await runtime.run_detached(container_id, bundle, pid_file)
    return int((await asyncio.to_thread(_read, pid_file)).strip())


def _write_bundle(bundle: str, config: dict[str, object]) -> None:
    os.makedirs(bundle, exist_ok=True)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f)


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


async def stop(runtime: Runtime, container_id: str) -> None:
    """Kill and delete the infra container; idempotent."""
    await runtime.kill(container_id, "KILL")
    faults.step("StopPodSandbox.infra_killed")
    await runtime.delete(container_id)
