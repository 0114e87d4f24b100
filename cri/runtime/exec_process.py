"""The process an exec runs: the container's own (user, env, cwd, capabilities...) with other args.

It comes from the bundle's config.json, parsed once per version of the file (its path, mtime and
size): an exec probe every few seconds reads it from memory, on the event loop, instead of a
worker thread parsing it each time. crid writes config.json once, at CreateContainer.
"""

import functools
import json
import os
from typing import Any


def container_process(bundle: str) -> dict[str, Any]:
    """A fresh copy of the ``process`` of ``bundle``'s config.json."""
    path = os.path.join(bundle, "config.json")
    st = os.stat(path)
    process = json.loads(_process_json(path, st.st_mtime_ns, st.st_size))
    assert isinstance(process, dict)
    return process


@functools.lru_cache(maxsize=512)  # more than a node's containers (kubelet: 110 pods)
def _process_json(path: str, mtime_ns: int, size: int) -> str:
    with open(path) as f:
        return json.dumps(json.load(f)["process"])


def write_process(file: int | str, process: dict[str, Any]) -> None:
    """The process file of ``runtime exec --process``, at a path or an open fd (closed after)."""
    with open(file, "w") as f:
        f.write(json.dumps(process))  # json.dump encodes in Python, chunk by chunk; dumps in C
