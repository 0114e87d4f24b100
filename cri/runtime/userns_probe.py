"""Whether a handler can run pods in user namespaces the way crid makes them:
at startup, a user namespace, an idmapped clone of the infra rootfs (on crid's
state dir's filesystem) and a trivial container in both. Only a handler that
passes gets ``user_namespaces`` advertised."""

import asyncio
import json
import logging
import os
import secrets
import shutil
import tempfile

from cri.errors import CridError
from cri.runtime import idmap, infra, namespaces, userns
from cri.runtime.oci import Runtime

log = logging.getLogger(__name__)

# any mapping will do: nothing made with it outlives the probe
_IDS = userns.Mapping(userns.IdMap(0, 100000, 65536), userns.IdMap(0, 100000, 65536))


def _spec(rootfs: str, user_ns: str) -> dict[str, object]:
    doc = infra.spec(rootfs, {"user": user_ns}, "", userns.oci_maps(_IDS))
    process = doc["process"]
    assert isinstance(process, dict)
    process.update(args=["/catatonit", "--version"], user={"uid": 0, "gid": 0})
    return doc


def _write(bundle: str, doc: dict[str, object]) -> None:
    os.makedirs(bundle, mode=0o711)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(doc, f)


def _clear(parent: str) -> None:
    """What a probe that crid's death cut short left."""
    for name in os.listdir(parent):
        work = os.path.join(parent, name)
        idmap.release(os.path.join(work, "idmap"))
        namespaces.remove([os.path.join(work, "user")])
        shutil.rmtree(work, ignore_errors=True)


async def probe(runtime: Runtime, state_dir: str, root_dir: str) -> str:
    """ "" when the handler runs a container in a user namespace on idmapped mounts,
    else why not."""
    for path in (state_dir, root_dir):
        try:
            userns.check_reachable(path)
        except CridError as exc:
            return str(exc)
    parent = os.path.join(state_dir, "probe", runtime.name)  # one per handler: they are probed side by side
    os.makedirs(parent, mode=0o711, exist_ok=True)
    await asyncio.to_thread(_clear, parent)
    work = tempfile.mkdtemp(prefix="userns-", dir=parent)
    os.chmod(work, 0o711)
    mapdir, pinned = os.path.join(work, "idmap"), []
    loop = asyncio.get_running_loop()
    try:
        rootfs = await asyncio.to_thread(infra.ensure_rootfs, root_dir)
        paths = await loop.run_in_executor(namespaces.EXECUTOR, userns.create, work, [], "", _IDS)
        pinned = list(paths.values())
        await asyncio.to_thread(idmap.bind_sources, [{"type": "bind", "source": rootfs}], mapdir, paths["user"])
        bundle = os.path.join(work, "bundle")
        await asyncio.to_thread(_write, bundle, _spec(os.path.join(mapdir, "b0"), paths["user"]))
        # created and started: the user namespace joined, the idmapped root pivoted into
        cid = f"crid-userns-probe-{secrets.token_hex(4)}"
        try:
            await runtime.run_detached(cid, bundle, os.path.join(work, "pid"))
        finally:
            await runtime.delete(cid)
        return ""
    except (OSError, CridError) as exc:
        return str(exc)
    finally:
        try:
            await asyncio.to_thread(idmap.release, mapdir)
            await loop.run_in_executor(namespaces.EXECUTOR, namespaces.remove, pinned)
            shutil.rmtree(work, ignore_errors=True)  # only once nothing is mounted in it
        except OSError as exc:
            log.warning("user namespace probe not cleaned up", extra={"crid_fields": {"dir": work, "error": str(exc)}})
