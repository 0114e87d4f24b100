"""Image volumes (KEP-4639): an OCI image's file tree mounted read-only into a container.

kubelet pulls the image (with its own pull policy) and sends a ``Mount`` whose
``image`` names it, optionally with an ``image_sub_path``. crid mounts the
image's layers once per pod and image, read-only (an overlay without an
upper dir, or a read-only bind of a one-layer image), at
``<state_dir>/image-volumes/<pod>/<image hex>``; every container of the pod
that names the image bind-mounts that tree (or its sub-path) read-only. The
mounts go with the pod (RemovePodSandbox). While one exists its layers are
held against garbage collection, also when the image is removed meanwhile,
as containerd's snapshot views hold theirs.

Each volume directory has a ``volume.json`` (image id and chain ids) written
before the mount, so a restarted crid knows what is held and what to unmount.
"""

import asyncio
import contextlib
import json
import logging
import os
import shutil
from dataclasses import dataclass

from cri.api.v1 import api_pb2 as pb
from cri.errors import FailedPrecondition, InvalidArgument, NotFound, quote
from cri.images.manager import Images
from cri.images.metadata import ImageRecord
from cri.log import fields
from cri.runtime import podfiles

log = logging.getLogger(__name__)

_RECORD = "volume.json"
_TREE = "tree"  # the mount point inside the volume's directory
_SYMLINK_DEPTH = 40  # as the kernel's limit on nested symlinks


@dataclass(frozen=True)
class Volume:
    image_id: str
    chain_ids: tuple[str, ...]
    tree: str


def resolve_in_root(root: str, sub_path: str) -> str:
    """``sub_path`` inside the tree ``root`` as the container would see it if
    ``root`` were its ``/``: symlinks are followed inside the tree (an absolute
    target starts at ``root``, ``..`` stops there), so the path returned is
    under ``root`` and has no symlink in it. Raises FileNotFoundError."""
    todo = [c for c in sub_path.split("/") if c not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        comp = todo.pop(0)
        if comp == "..":
            if done:
                done.pop()
            continue
        path = os.path.join(root, *done, comp)
        if os.path.islink(path):
            links += 1
            if links > _SYMLINK_DEPTH:
                raise FileNotFoundError(f"too many symlinks in {sub_path!r}")
            target = os.readlink(path)
            if target.startswith("/"):
                done = []
            todo = [c for c in target.split("/") if c not in ("", ".")] + todo
            continue
        if not os.path.lexists(path):
            raise FileNotFoundError(path)
        done.append(comp)
    return os.path.join(root, *done)


def check_mount(m: pb.Mount) -> None:
    """What an image mount must be, before anything is made for it."""
    if m.host_path:
        raise InvalidArgument(
            f"mount at {quote(m.container_path)} names both an image and the host path {quote(m.host_path)}"
        )
    if not m.readonly:
        raise InvalidArgument(f"image volume at {quote(m.container_path)} must be read-only")
    if m.recursive_read_only or m.propagation != pb.PROPAGATION_PRIVATE:
        raise InvalidArgument(f"image volume at {quote(m.container_path)}: only a private read-only mount is supported")
    if len(m.uidMappings) or len(m.gidMappings):
        raise InvalidArgument(
            "per-mount uid/gid mappings are not supported (a pod in a user namespace has all its mounts idmapped)"
        )


class ImageVolumes:
    def __init__(self, images: Images, state_dir: str) -> None:
        self.images = images
        self.dir = os.path.join(state_dir, "image-volumes")
        self._volumes: dict[str, dict[str, Volume]] = {}  # pod id -> image id -> volume
        self._lock = asyncio.Lock()

    def chains_in_use(self) -> set[str]:
        return {c for vols in self._volumes.values() for v in vols.values() for c in v.chain_ids}

    def image_of(self, m: pb.Mount) -> ImageRecord:
        """The pulled image an image mount names (kubelet pulls it first)."""
        image = self.images.find(m.image.image)
        if image is None:
            what = f"image {quote(m.image.image)} of the volume at {quote(m.container_path)}"
            raise NotFound(f"{what} not found: pull it first")
        return image

    def with_refs(self, config: pb.ContainerConfig) -> pb.ContainerConfig:
        """CreateContainer: image mounts checked, and their images' ids set (ContainerStatus reports them, KEP-5365)."""
        if not any(m.image.image for m in config.mounts):
            return config
        out = pb.ContainerConfig()
        out.CopyFrom(config)
        for mount in out.mounts:
            if mount.image.image:
                check_mount(mount)
                mount.image.image_ref = self.image_of(mount).id
        return out

    async def resolve(self, sandbox_id: str, config: pb.ContainerConfig) -> pb.ContainerConfig:
        """``config`` with each image mount turned into a read-only bind of the
        pod's mount of that image (made now if it is the first)."""
        if not any(m.image.image for m in config.mounts):
            return config
        out = pb.ContainerConfig()
        out.CopyFrom(config)
        for m in out.mounts:
            if not m.image.image:
                continue
            check_mount(m)
            vol = await self._volume(sandbox_id, self.image_of(m))
            try:
                source = await asyncio.to_thread(resolve_in_root, vol.tree, m.image_sub_path)
            except FileNotFoundError:
                raise InvalidArgument(
                    f"sub-path {quote(m.image_sub_path)} of image volume at {quote(m.container_path)} "
                    f"does not exist in image {m.image.image[:100]!r}"
                ) from None
            m.host_path = source
            m.ClearField("image")
            m.image_sub_path = ""
        return out

    async def _volume(self, sandbox_id: str, image: ImageRecord) -> Volume:
        async with self._lock:  # one mount per pod and image, however many creates race
            vols = self._volumes.setdefault(sandbox_id, {})
            vol = vols.get(image.id)
            if vol is not None:
                return vol
            base = os.path.join(self.dir, sandbox_id, image.id.removeprefix("sha256:"))
            vol = Volume(image.id, tuple(image.chain_ids), os.path.join(base, _TREE))
            await asyncio.to_thread(self._mount, base, vol, image)
            vols[image.id] = vol
            log.info("image volume mounted", extra=fields(pod=sandbox_id, image=image.id))
            return vol

    def _mount(self, base: str, vol: Volume, image: ImageRecord) -> None:
        os.makedirs(vol.tree, mode=0o755, exist_ok=True)
        record = {"image_id": vol.image_id, "chain_ids": list(vol.chain_ids)}
        tmp = os.path.join(base, _RECORD + ".tmp")
        with open(tmp, "w") as f:  # recorded before the mount: a restart knows what to hold and unmount
            json.dump(record, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(base, _RECORD))
        if os.path.ismount(vol.tree):
            return  # mounted before a crash that came before the daemon's memory knew it
        try:
            self.images.mount_readonly(image, vol.tree)
        except (OSError, KeyError) as exc:
            raise FailedPrecondition(f"cannot mount image {image.id} as a volume: {exc}") from None

    async def release(self, sandbox_id: str) -> bool:
        """Unmount and remove the pod's image volumes (RemovePodSandbox); True if it had any."""
        async with self._lock:
            await asyncio.to_thread(self._remove_dir, os.path.join(self.dir, sandbox_id))
            if not self._volumes.pop(sandbox_id, None):
                return False
            log.info("image volumes unmounted", extra=fields(pod=sandbox_id))
            return True

    @staticmethod
    def _remove_dir(pod_dir: str) -> None:
        try:
            names = os.listdir(pod_dir)
        except FileNotFoundError:
            return
        for name in names:
            tree = os.path.join(pod_dir, name, _TREE)
            podfiles.unmount(tree)
            if os.path.ismount(tree):  # never delete through a mount
                raise OSError(f"image volume {tree} is still mounted")
        shutil.rmtree(pod_dir)

    async def recover(self, live_pods: set[str]) -> None:
        """After a restart: hold the volumes of live pods, remove those of pods gone."""
        found = await asyncio.to_thread(self._read_records)
        for pod, vols in found.items():
            if pod in live_pods:
                self._volumes[pod] = vols
            else:
                await self.release(pod)

    def _read_records(self) -> dict[str, dict[str, Volume]]:
        found: dict[str, dict[str, Volume]] = {}
        with contextlib.suppress(FileNotFoundError):
            for pod in os.listdir(self.dir):
                vols = found.setdefault(pod, {})
                for name in os.listdir(os.path.join(self.dir, pod)):
                    base = os.path.join(self.dir, pod, name)
                    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                        with open(os.path.join(base, _RECORD)) as f:
                            rec = json.load(f)
                        vol = Volume(rec["image_id"], tuple(rec["chain_ids"]), os.path.join(base, _TREE))
                        if os.path.ismount(vol.tree):  # else a crash came before the mount: the next create mounts it
                            vols[vol.image_id] = vol
        return found
