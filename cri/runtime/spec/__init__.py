"""A CRI CreateContainer request -> the container's OCI runtime spec (config.json).

The rules are containerd's CRI plugin (1.7 / 2.0: internal/cri/server
container_create*.go, internal/cri/opts, pkg/oci) unless a comment says
otherwise; where containerd and CRI-O differ the comment says which one crid
follows. Blocking (reads the rootfs, /dev, /proc; creates missing host
directories of mounts): call it from a worker thread.

``build`` puts the spec together from ``process``, ``mounts``, ``devices``
and ``resources``; the host facts they depend on come from ``cri.host.HOST``.
This module re-exports what the rest of crid imports from here.
"""

from cri.runtime.signals import signal_number, stop_signal
from cri.runtime.spec.build import SpecInputs, build_spec
from cri.runtime.spec.process import DEFAULT_CAPS
from cri.runtime.spec.resources import update_resources

# signal_number and stop_signal live in cri.runtime.signals: here for the callers that import them from spec
__all__ = ["DEFAULT_CAPS", "SpecInputs", "build_spec", "signal_number", "stop_signal", "update_resources"]
