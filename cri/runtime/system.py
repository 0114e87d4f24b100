"""The host calls of the pod and container lifecycles, on one object.

Pods and Containers make their mounts, namespaces, cgroups and process
checks through a ``System`` they are given, so a unit test hands them a fake
one (and a fake OCI runtime) and drives their state machines without root.
Each method is the module function of the same job; blocking ones are run in
threads by the callers, as before.
"""

import os
from typing import Any

from cri.runtime import cgroups, infra, monitor, namespaces, podfiles, procs, userns
from cri.runtime.cdi import Registry
from cri.runtime.spec import SpecInputs, build_spec
from cri.runtime.spec.types import Spec


def _own_oom_score_adj() -> int:
    try:
        with open("/proc/self/oom_score_adj") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return 0


class System:
    def __init__(self, cdi: Registry | None = None) -> None:
        self.cdi = cdi if cdi is not None else Registry()  # the CDI spec dirs ([cdi] spec_dirs)

    # --- namespaces, mounts, pod files -------------------------------------------------------

    def create_namespaces(self, directory: str, kinds: list[str], hostname: str) -> dict[str, str]:
        return namespaces.create(directory, kinds, hostname)

    def create_user_namespaces(
        self, directory: str, kinds: list[str], hostname: str, ids: userns.Mapping
    ) -> dict[str, str]:
        return userns.create(directory, kinds, hostname, ids)

    def remove_namespaces(self, paths: list[str]) -> None:
        namespaces.remove(paths)

    def is_pinned(self, path: str) -> bool:
        return namespaces.is_pinned(path)

    def apply_sysctls(self, paths: dict[str, str], sysctls: dict[str, str]) -> None:
        namespaces.apply_sysctls(paths, sysctls)

    def mount_shm(self, path: str) -> None:
        podfiles.mount_shm(path)

    def unmount(self, path: str) -> None:
        podfiles.unmount(path)

    def write_pod_files(
        self, directory: str, hostname: str, ips: list[str], dns: podfiles.DnsConfig | None, host_network: bool
    ) -> None:
        podfiles.write_pod_files(directory, hostname, ips, dns, host_network)

    def infra_rootfs(self, root_dir: str) -> str:
        return infra.ensure_rootfs(root_dir)

    # --- cgroups ---------------------------------------------------------------------------------

    def plan_cgroups(self, cgroup_parent: str, shared: set[str]) -> list[str]:
        return cgroups.planned(cgroup_parent, shared)

    def ensure_cgroups(self, cgroup_parent: str, shared: set[str]) -> list[str]:
        return cgroups.ensure(cgroup_parent, shared)

    def remove_cgroups(self, created: list[str]) -> None:
        cgroups.remove(created)

    # --- processes -------------------------------------------------------------------------------

    def start_time(self, pid: int) -> int:
        return procs.start_time(pid)

    def same_process(self, pid: int, started: int) -> bool:
        return procs.same_process(pid, started)

    def kill(self, pid: int, sig: int) -> None:
        os.kill(pid, sig)

    def live_monitor(self, bundle: str) -> int:
        """The pid of the container's conmon when it still runs, else 0."""
        pid = monitor.conmon_pid(bundle)
        return pid if pid and procs.exists(pid) and monitor.is_conmon(pid) else 0

    def oom_score_adj(self) -> int:
        """crid's own: no container gets a lower one."""
        return _own_oom_score_adj()

    def build_spec(self, inputs: SpecInputs) -> Spec:
        return build_spec(inputs, self.cdi)

    def cdi_status(self) -> dict[str, Any]:
        """The CDI spec dirs, devices and spec file errors (Status verbose)."""
        return self.cdi.status()
