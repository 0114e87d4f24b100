"""CDI, the Container Device Interface (github.com/cncf-tags/container-device-interface):
devices a container asks for by fully qualified name (``vendor.com/class=name``),
defined by spec files in the CDI spec dirs, applied to its OCI spec as edits.

``schema`` reads and checks spec files, ``registry`` finds devices in the spec
dirs, ``edits`` applies them to a spec.
"""

from cri.runtime.cdi.registry import ANNOTATION_PREFIX, DEFAULT_SPEC_DIRS, Registry, requested_devices

__all__ = ["ANNOTATION_PREFIX", "DEFAULT_SPEC_DIRS", "Registry", "requested_devices"]
