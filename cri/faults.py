"""Fault injection for the crash tests: die right after a named durable step.

When the environment variable ``CRID_FAULT_AFTER`` names a step, crid exits
at once (``os._exit``: no cleanup, no flushing of work in flight, as a
SIGKILL would) the first time it reaches that step. Tests set it; a daemon
started without it pays one string comparison per step.

A durable step is a point where crid has just persisted a record change, or
where the system has just changed (a mount, a namespace, a CNI ADD or DEL,
the OCI runtime's create, start, kill or delete) and crid has not recorded
it yet. Names are ``<CRI operation>.<after what>``. ``STEPS`` lists them in
the order the operation reaches them; a unit test keeps it and the
``step()`` calls in the source in agreement.
"""

import logging
import os

from cri.log import fields

ENV = "CRID_FAULT_AFTER"
EXIT_CODE = 86  # tells an injected fault from a crash or a signal
_TARGET = os.environ.get(ENV, "")

log = logging.getLogger(__name__)

STEPS = (
    "PullImage.config_stored",
    "PullImage.layer_fetched",
    "PullImage.snapshot_committed",
    "PullImage.snapshot_recorded",
    "PullImage.image_recorded",
    "RunPodSandbox.recorded",
    "RunPodSandbox.cgroups_planned",
    "RunPodSandbox.cgroups_made",
    "RunPodSandbox.cgroups_recorded",
    "RunPodSandbox.namespaces_recorded",
    "RunPodSandbox.namespaces_made",
    "RunPodSandbox.shm_recorded",
    "RunPodSandbox.shm_mounted",
    # the network and the infra process are set up side by side
    "RunPodSandbox.network_recorded",
    "RunPodSandbox.cni_cache_half_written",  # its tmp file, before the rename
    "RunPodSandbox.cni_cache_written",
    "RunPodSandbox.cni_added",
    "RunPodSandbox.cni_result_cached",
    "RunPodSandbox.ips_recorded",
    "RunPodSandbox.infra_recorded",
    "RunPodSandbox.infra_started",
    "RunPodSandbox.infra_pid_recorded",
    "RunPodSandbox.ready_recorded",
    "CreateContainer.recorded",
    "CreateContainer.rootfs_recorded",
    "CreateContainer.rootfs_mounted",
    "CreateContainer.runtime_created",
    "CreateContainer.created_recorded",
    "StartContainer.started",
    "StartContainer.running_recorded",
    "StopContainer.signalled",
    "StopContainer.killed",
    "StopContainer.exit_recorded",
    "RemoveContainer.runtime_deleted",
    "RemoveContainer.rootfs_unmounted",
    "RemoveContainer.record_deleted",
    "StopPodSandbox.notready_recorded",
    "StopPodSandbox.infra_killed",
    "StopPodSandbox.infra_deleted",
    "StopPodSandbox.cni_deleted",
    "StopPodSandbox.network_removed",
    "StopPodSandbox.netns_removed",
    "StopPodSandbox.shm_unmounted",
    "StopPodSandbox.teardown_recorded",
    "RemovePodSandbox.namespaces_removed",
    "RemovePodSandbox.cgroups_removed",
    "RemovePodSandbox.record_deleted",
)


def step(name: str) -> None:
    """Mark a durable step; exits the process here when it is the targeted one."""
    if name == _TARGET:
        log.critical("fault injected: exiting", extra=fields(step=name))
        os._exit(EXIT_CODE)
