"""CDI container edits applied to a container's OCI spec, as the CDI library's
ContainerEdits.Apply does (pkg/cdi container-edits.go, internal/ociedit):
the edits of every requested device and of their specs are put together per
kind first, then each kind is applied in the library's order."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from cri.runtime.cdi.schema import ContainerEdits, DeviceNode, SpecError, go_quote

if TYPE_CHECKING:  # cri.runtime.spec imports this package: its types for the checker only
    from cri.runtime.spec.types import Device, DeviceRule, Hook, IntelRdt, Mount, Spec


def _host_info(path: str) -> tuple[str, int, int, int]:
    """(type, major, minor, file mode) of a device node, not following symlinks (runc's DeviceFromPath)."""
    st = os.lstat(path)
    if stat.S_ISBLK(st.st_mode):
        kind = "b"
    elif stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISFIFO(st.st_mode):
        kind = "p"
    else:
        raise OSError("not a device node")
    return kind, os.major(st.st_rdev), os.minor(st.st_rdev), stat.S_IMODE(st.st_mode)


def _device(node: DeviceNode) -> Device:
    """The OCI device, what the node leaves out taken from its host path (the library's fillMissingInfo)."""
    kind, major, minor, mode = node.type, node.major, node.minor, node.fileMode
    minimal = bool(kind) and (major != 0 or kind == "p")  # a vendor may specify a node fully
    host = node.hostPath or node.path
    try:
        found = _host_info(host)
    except OSError as exc:
        if not minimal:
            why = exc.strerror if exc.strerror else str(exc)
            raise SpecError(f"failed to stat CDI host device {go_quote(host)}: {why}") from None
    else:
        if mode is None:
            mode = found[3]
        if not minimal:
            kind = kind or found[0]
            if kind != found[0]:
                raise SpecError(
                    f"CDI device ({go_quote(node.path)}, {go_quote(host)}), host type mismatch ({kind}, {found[0]})"
                )
            if kind != "p" and major == 0:
                major, minor = found[1], found[2]
    dev: Device = {"path": node.path, "type": kind, "major": major, "minor": minor}
    if mode is not None:
        dev["fileMode"] = mode
    if node.uid is not None:
        dev["uid"] = node.uid
    if node.gid is not None:
        dev["gid"] = node.gid
    return dev


def _apply_env(spec: Spec, env: list[str]) -> None:
    """A variable already set is replaced in place, a new one appended."""
    current = spec["process"]["env"]
    index = {v.partition("=")[0]: i for i, v in enumerate(current)}
    for v in env:
        key = v.partition("=")[0]
        if key in index:
            current[index[key]] = v
        else:
            index[key] = len(current)
            current.append(v)


def _apply_nodes(spec: Spec, nodes: list[DeviceNode]) -> None:
    linux = spec["linux"]
    user = spec["process"]["user"]
    for node in nodes:
        dev = _device(node)
        # no owner given: the container's user, unless root (the library's default)
        if "uid" not in dev and user["uid"] > 0:
            dev["uid"] = user["uid"]
        if "gid" not in dev and user["gid"] > 0:
            dev["gid"] = user["gid"]
        devices = linux.setdefault("devices", [])
        for i, old in enumerate(devices):
            if old["path"] == dev["path"]:
                del devices[i]
                break
        devices.append(dev)
        if dev["type"] in ("b", "c"):
            access = {"": "rwm", "none": ""}.get(node.permissions, node.permissions)
            rule: DeviceRule = {"allow": True, "type": dev["type"], "major": dev["major"], "minor": dev["minor"]}
            if access:  # Go's omitempty: "none" leaves the key out
                rule["access"] = access
            linux["resources"].setdefault("devices", []).append(rule)


def _depth(m: Mount) -> int:
    return posixpath.normpath(m["destination"]).count("/")


def _apply_mounts(spec: Spec, edits: ContainerEdits) -> None:
    mounts = spec["mounts"]
    for m in edits.mounts:
        for i, old in enumerate(mounts):
            if old["destination"] == m.containerPath:
                del mounts[i]
                break
        mount: Mount = {"destination": m.containerPath, "source": m.hostPath}
        if m.type:
            mount["type"] = m.type
        if m.options:
            mount["options"] = list(m.options)
        mounts.append(mount)
    # the library sorts all of the spec's mounts, stably, by depth: parents before what is mounted inside them
    mounts.sort(key=_depth)


def _apply_hooks(spec: Spec, edits: ContainerEdits) -> None:
    for h in edits.hooks:
        hook: Hook = {"path": h.path}
        if h.args:
            hook["args"] = list(h.args)
        if h.env:
            hook["env"] = list(h.env)
        if h.timeout is not None:
            hook["timeout"] = h.timeout
        hooks = spec.setdefault("hooks", {})
        cast("dict[str, list[Hook]]", hooks).setdefault(h.hookName, []).append(hook)


def _intel_rdt(edits: ContainerEdits) -> IntelRdt:
    r = edits.intelRdt
    assert r is not None
    out: IntelRdt = {}
    if r.closID:
        out["closID"] = r.closID
    if r.l3CacheSchema:
        out["l3CacheSchema"] = r.l3CacheSchema
    if r.memBwSchema:
        out["memBwSchema"] = r.memBwSchema
    if r.schemata:
        out["schemata"] = list(r.schemata)
    if r.enableMonitoring:
        out["enableMonitoring"] = True
    return out


def apply_edits(spec: Spec, parts: Sequence[ContainerEdits]) -> None:
    """Apply ``parts`` (spec-level and device-level edits, in request order) to ``spec`` in place.
    SpecError when a device node cannot be completed from its host path."""
    merged = ContainerEdits(
        env=[v for p in parts for v in p.env],
        deviceNodes=[n for p in parts for n in p.deviceNodes],
        netDevices=[d for p in parts for d in p.netDevices],
        hooks=[h for p in parts for h in p.hooks],
        mounts=[m for p in parts for m in p.mounts],
        intelRdt=next((p.intelRdt for p in reversed(parts) if p.intelRdt is not None), None),
        additionalGids=[g for p in parts for g in p.additionalGids],
    )
    if merged.env:
        _apply_env(spec, merged.env)
    _apply_nodes(spec, merged.deviceNodes)
    for d in merged.netDevices:
        spec["linux"].setdefault("netDevices", {})[d.hostInterfaceName] = {"name": d.name}
    if merged.mounts:
        _apply_mounts(spec, merged)
    _apply_hooks(spec, merged)
    if merged.intelRdt is not None:
        spec["linux"]["intelRdt"] = _intel_rdt(merged)
    gids = spec["process"]["user"]["additionalGids"]
    for gid in merged.additionalGids:
        if gid != 0 and gid not in gids:  # the library ignores 0
            gids.append(gid)
