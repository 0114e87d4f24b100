"""The CDI registry: the spec files of the spec dirs, their devices by fully
qualified name, and the errors of the files that could not be used.

As the CDI library's Cache (pkg/cdi cache.go, spec-dirs.go): every ``*.json``
and ``*.yaml`` file directly in a spec dir is a spec; a device defined in a
later dir overrides the one of an earlier dir, one defined twice in the same
dir is a conflict (an error on both files, and the device is dropped); an
invalid file is skipped and its error kept. Instead of the library's inotify
watch, the dirs and files are stat'ed before each use and only what changed
(mtime, ctime, size or inode) is read again.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import FailedPrecondition, InvalidArgument, quote
from cri.runtime.cdi.edits import apply_edits
from cri.runtime.cdi.schema import (
    ContainerEdits,
    Device,
    Spec,
    SpecError,
    check_qualified_name,
    go_quote,
    read_spec,
)

if TYPE_CHECKING:  # cri.runtime.spec imports this package: its types for the checker only
    from cri.runtime.spec.types import Spec as OciSpec

DEFAULT_SPEC_DIRS = ("/etc/cdi", "/var/run/cdi")
ANNOTATION_PREFIX = "cdi.k8s.io/"
_EXTENSIONS = (".json", ".yaml")

_Key = tuple[int, int, int, int]  # what says a file changed: mtime, ctime, size, inode


@dataclass(frozen=True)
class _Loaded:
    key: _Key
    spec: Spec | None
    error: str


def _key(st: os.stat_result) -> _Key:
    return st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino


def requested_devices(config: pb.ContainerConfig) -> list[str]:
    """The CDI devices a container asks for: ``CDI_devices``, then the ``cdi.k8s.io/*``
    annotations of its config (in key order), each name once (containerd's and CRI-O's
    WithCDI; like them, crid does not read the pod's annotations, which any pod author sets)."""
    names = list(dict.fromkeys(d.name for d in config.CDI_devices))
    for key in sorted(config.annotations):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        for name in config.annotations[key].split(","):
            try:
                check_qualified_name(name)
            except SpecError:
                raise InvalidArgument(
                    f"failed to parse CDI device annotations: invalid CDI device name {quote(name)} in {quote(key)}"
                ) from None
            if name not in names:
                names.append(name)
    return names


class Registry:
    def __init__(self, spec_dirs: Sequence[str] = DEFAULT_SPEC_DIRS) -> None:
        self.spec_dirs = tuple(os.path.normpath(d) for d in spec_dirs)
        self._lock = threading.Lock()  # spec builds run in worker threads
        self._seen: tuple[Any, ...] | None = None  # the dirs and files as last read
        self._files: dict[str, _Loaded] = {}
        self._devices: dict[str, tuple[Spec, Device]] = {}
        self._errors: dict[str, list[str]] = {}

    # --- loading -------------------------------------------------------------------

    def _listing(self) -> tuple[list[tuple[str, int, _Key | None, str]], dict[str, str]]:
        """(path, priority, key, error) of every candidate file, and the errors of unreadable dirs."""
        files: list[tuple[str, int, _Key | None, str]] = []
        dir_errors: dict[str, str] = {}
        for priority, directory in enumerate(self.spec_dirs):
            try:
                entries = sorted(os.scandir(directory), key=lambda e: e.name)
            except FileNotFoundError:
                continue
            except OSError as exc:
                dir_errors[directory] = f"failed to read CDI Spec dir {go_quote(directory)}: {exc.strerror or exc}"
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) or not entry.name.endswith(_EXTENSIONS):
                    continue
                try:
                    files.append((entry.path, priority, _key(os.stat(entry.path)), ""))
                except OSError as exc:
                    files.append(
                        (
                            entry.path,
                            priority,
                            None,
                            f"failed to read CDI Spec {go_quote(entry.path)}: {exc.strerror or exc}",
                        )
                    )
        return files, dir_errors

    def _load(self, path: str, key: _Key | None, error: str) -> _Loaded:
        old = self._files.get(path)
        if key is not None and old is not None and old.key == key:
            return old
        if key is None:
            return _Loaded((0, 0, 0, 0), None, error)
        try:
            return _Loaded(key, read_spec(path), "")
        except SpecError as exc:
            return _Loaded(key, None, str(exc))

    def _refresh(self) -> None:
        files, dir_errors = self._listing()
        seen = (tuple(files), tuple(sorted(dir_errors.items())))
        if seen == self._seen:
            return
        loaded: dict[str, _Loaded] = {}
        devices: dict[str, tuple[Spec, Device, str, int]] = {}
        conflicts: set[str] = set()
        errors: dict[str, list[str]] = {d: [e] for d, e in dir_errors.items()}
        for path, priority, key, error in files:
            loaded[path] = one = self._load(path, key, error)
            if one.spec is None:
                errors.setdefault(path, []).append(one.error)
                continue
            for dev in one.spec.devices:
                name = f"{one.spec.kind}={dev.name}"
                other = devices.get(name)
                if other is not None and other[3] == priority:
                    msg = f"conflicting device {go_quote(name)} (specs {go_quote(path)}, {go_quote(other[2])})"
                    errors.setdefault(path, []).append(msg)
                    errors.setdefault(other[2], []).append(msg)
                    conflicts.add(name)
                    continue
                devices[name] = (one.spec, dev, path, priority)  # a later dir overrides
        # as the library: a conflict drops the device, even if a later dir defines it again
        self._devices = {n: (s, d) for n, (s, d, _, _) in devices.items() if n not in conflicts}
        self._files, self._errors, self._seen = loaded, errors, seen

    # --- use -----------------------------------------------------------------------

    def edits_for(self, names: Sequence[str]) -> list[ContainerEdits]:
        """The edits of ``names`` in the order the library applies them: each spec's own
        edits before those of its first requested device. InvalidArgument naming every
        device that no valid spec defines."""
        with self._lock:
            self._refresh()
            found = [(n, self._devices.get(n)) for n in names]
        unresolved = [n for n, hit in found if hit is None]
        if unresolved:
            raise InvalidArgument(
                "CDI device injection failed: unresolvable CDI devices " + ", ".join(quote(n) for n in unresolved)
            )
        parts: list[ContainerEdits] = []
        specs: set[int] = set()
        for _, hit in found:
            assert hit is not None
            spec, dev = hit
            if id(spec) not in specs:
                specs.add(id(spec))
                parts.append(spec.containerEdits)
            parts.append(dev.containerEdits)
        return parts

    def inject(self, spec: OciSpec, names: Sequence[str]) -> None:
        """Apply the edits of the CDI devices ``names`` to ``spec``; nothing for no names."""
        if not names:
            return
        parts = self.edits_for(names)
        try:
            apply_edits(spec, parts)
        except SpecError as exc:
            raise FailedPrecondition(f"CDI device injection failed: {exc}") from None

    def status(self) -> dict[str, Any]:
        """What Status(verbose) shows: the dirs, the devices found, the errors by file."""
        with self._lock:
            self._refresh()
            return {
                "specDirs": list(self.spec_dirs),
                "devices": sorted(self._devices),
                "errors": {path: list(errs) for path, errs in sorted(self._errors.items())},
            }
