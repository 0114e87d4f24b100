"""crid: a Kubernetes CRI container runtime."""


def __getattr__(name: str) -> str:
    # looked up when asked for: importlib.metadata costs each of a pull's child processes 20 ms
    if name != "__version__":
        raise AttributeError(name)
    from importlib import metadata

    try:
        return metadata.version("crid")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0.1.0"
