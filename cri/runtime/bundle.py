"""A container's OCI bundle on disk: its directories, its rootfs mounted, its config.json.

CreateContainer's blocking part (mkdir, the overlay mount, the image's /etc/passwd read for the
spec's user, the JSON written) runs as one call in a worker thread: the event loop hands off once,
not once per step. The bundle (``<state>/containers/<id>``: rootfs, config.json, conmon's files)
lives in the state dir; the container's writable layer (``<root>/containers/<id>``: upper, work)
in the root dir.
"""

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from cri import faults
from cri.runtime.spec import SpecInputs
from cri.runtime.spec.types import Spec


@dataclass(frozen=True)
class BundleDirs:
    bundle: str  # config.json, rootfs/, idmap/ (and conmon's files)
    persist: str  # upper/, work/ (the container's writable layer)

    @property
    def rootfs(self) -> str:
        return os.path.join(self.bundle, "rootfs")

    @property
    def upper(self) -> str:
        return os.path.join(self.persist, "upper")

    @property
    def work(self) -> str:
        return os.path.join(self.persist, "work")

    @property
    def idmap(self) -> str:
        return os.path.join(self.bundle, "idmap")


# mount(rootfs, upper, work): the image's layers with the writable layer on top
Mount = Callable[[str, str, str], None]


def make_bundle(
    dirs: BundleDirs,
    mount: Mount,
    build: Callable[[SpecInputs], Spec],
    inputs: SpecInputs,
    finish: Callable[[Spec], None] | None = None,
) -> Spec:
    """Make the bundle's dirs, mount the rootfs, build the spec (``finish`` may change it, e.g.
    idmapped mount sources) and write it as config.json; returns the spec. Blocking."""
    for d in (dirs.rootfs, dirs.work):
        os.makedirs(d, mode=0o700, exist_ok=True)
    os.makedirs(dirs.upper, mode=0o755, exist_ok=True)  # the container's "/" takes this mode: others enter it
    mount(dirs.rootfs, dirs.upper, dirs.work)
    faults.step("CreateContainer.rootfs_mounted")
    spec = build(inputs)
    if finish is not None:
        finish(spec)
    write_json(os.path.join(dirs.bundle, "config.json"), spec)
    return spec


def write_json(path: str, doc: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(json.dumps(doc))
    os.rename(tmp, path)


def read_json(path: str) -> dict[str, object]:
    with open(path) as f:
        doc = json.load(f)
    assert isinstance(doc, dict)
    return doc
