"""The floor of each runtime's own container: the config.json it generated, run by runc by hand.

The other OCI floors run ``runc spec``'s minimal bundle. A CRI runtime's container is more: it
joins the pod's network, IPC and UTS namespaces, bind-mounts /etc/hosts, resolv.conf and the
log, masks and read-only-mounts kubelet's /proc and /sys paths, sits in the pod's cgroup. This
workload starts one busybox container through the CRI, copies the config.json that the runtime
wrote into its bundle and, beside the pod, times ``runc create`` + ``runc start`` of that very
spec (its rootfs is the running container's, already mounted) with no daemon in between, alone
and under crid's conmon command line; and CreateContainer + StartContainer of the same
container through the CRI, in the same loop. What a runtime spends beyond the first two is its
own; below them no runtime that generates that spec can go.
"""

import json
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import monitor_floor, oci
from benchmarks.core import CriTarget, NotSupported, Params, Row, RowSamples, cri_rows_workload
from benchmarks.cri_calls import (
    CONTAINER_RPCS,
    create_container,
    delete_container,
    ensure_busybox,
    pod,
    start_container,
    stop_container,
)


def own_spec(t: CriTarget, cid: str) -> dict[str, Any]:
    """The spec of the started container ``cid``, its rootfs made an absolute path."""
    bundle = t.bundles_dir / cid
    spec: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    root = Path(spec["root"]["path"])
    spec["root"]["path"] = str(root if root.is_absolute() else bundle / root)
    if ":" in spec["linux"].get("cgroupsPath", ""):
        raise NotSupported(f"{t.name} uses systemd cgroup paths; this floor makes cgroupfs ones")
    return spec


def copy_bundle(spec: dict[str, Any], workdir: Path, cid: str) -> Path:
    """A bundle of ``spec`` for the container ``cid``: a cgroup of its own beside the original's."""
    mine = json.loads(json.dumps(spec))
    parent = mine["linux"].get("cgroupsPath", "").rpartition("/")[0]
    mine["linux"]["cgroupsPath"] = f"{parent}/{cid}"
    bundle = workdir / cid
    bundle.mkdir(parents=True)
    (bundle / "config.json").write_text(json.dumps(mine))
    return bundle


@cri_rows_workload(
    "floor_own_spec",
    (
        Row("runc", "floor: `runc create` + `runc start` of the runtime's own spec of the container"),
        Row("monitor", "floor: conmon + `runc create` + `runc start` of that spec"),
        Row("cri", "CreateContainer + StartContainer of that container, beside those floors"),
    ),
    count=15,
    runs=3,
    rpcs=CONTAINER_RPCS,
    needs_images=True,
)
def floor_own_spec(t: CriTarget, p: Params) -> RowSamples:
    busybox = ensure_busybox(t, p)
    out: dict[str, list[float]] = {"runc": [], "monitor": [], "cri": []}
    root = p.workdir / "runc-root"
    with pod(t, p) as (pod_id, pod_cfg):
        probe = create_container(t, pod_id, pod_cfg, busybox, "probe")
        start_container(t, probe)  # containerd writes the bundle at start
        spec = own_spec(t, probe)
        for i in range(p.count):
            tag = f"{p.round}-{i}-{uuid.uuid4().hex[:8]}"
            cid = f"own-runc-{tag}"
            out["runc"].append(oci.create_start_once(oci.RUNC, root, copy_bundle(spec, p.workdir, cid), cid))
            cid = f"own-mon-{tag}"
            bundle = copy_bundle(spec, p.workdir, cid)
            out["monitor"].append(monitor_floor.conmon_create_start_once(oci.RUNC, root, bundle, cid, p.workdir))
            t0 = time.perf_counter()
            cid = create_container(t, pod_id, pod_cfg, busybox, f"c{i}")
            start_container(t, cid)
            out["cri"].append(time.perf_counter() - t0)
            stop_container(t, cid)
            delete_container(t, cid)
    return dict(out)
