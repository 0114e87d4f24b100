"""crid: a Kubernetes CRI container runtime."""

from importlib import metadata

try:
    __version__ = metadata.version("crid")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"
