"""runtime.v1.ImageService: validate, call cri.images, build the reply."""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.images.auth import credentials_from_cri
from cri.images.manager import Images
from cri.images.metadata import ImageRecord

# images per StreamImages message: bounded, like the runtime's Stream* calls
STREAM_CHUNK = 200


def image_message(image: ImageRecord) -> pb.Image:
    msg = pb.Image(
        id=image.id,
        repo_tags=image.tags,
        repo_digests=image.digests,
        size=image.size,
        username=image.username,
        pinned=image.pinned,
    )
    if image.uid is not None:
        msg.uid.CopyFrom(pb.Int64Value(value=image.uid))
    return msg


class ImageServicer:
    def __init__(self, images: Images) -> None:
        self.images = images

    async def PullImage(self, request: pb.PullImageRequest, context: Any) -> pb.PullImageResponse:
        if not request.image.image:
            raise InvalidArgument("PullImage: image reference is empty")
        a = request.auth
        credentials = credentials_from_cri(a.username, a.password, a.auth, a.identity_token, a.registry_token)
        image_id = await self.images.pull(request.image.image, credentials)
        return pb.PullImageResponse(image_ref=image_id)

    def _listed(self, request: pb.ListImagesRequest | pb.StreamImagesRequest) -> list[ImageRecord]:
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            found = self.images.find(wanted)
            return [found] if found is not None else []
        return self.images.all()

    async def ListImages(self, request: pb.ListImagesRequest, context: Any) -> pb.ListImagesResponse:
        return pb.ListImagesResponse(images=[image_message(i) for i in self._listed(request)])

    async def StreamImages(
        self, request: pb.StreamImagesRequest, context: Any
    ) -> AsyncIterator[pb.StreamImagesResponse]:
        found = self._listed(request)
        for i in range(0, len(found), STREAM_CHUNK):
            yield pb.StreamImagesResponse(images=[image_message(img) for img in found[i : i + STREAM_CHUNK]])

    async def ImageStatus(self, request: pb.ImageStatusRequest, context: Any) -> pb.ImageStatusResponse:
        if not request.image.image:
            raise InvalidArgument("ImageStatus: image is empty")
        image = self.images.find(request.image.image)
        if image is None:  # the CRI answers an unknown image with an empty status, not an error
            return pb.ImageStatusResponse()
        info = {}
        if request.verbose:
            info["info"] = json.dumps(
                {
                    "id": image.id,
                    "manifestDigest": image.manifest_digest,
                    "mediaType": image.manifest_media_type,
                    "chainIDs": image.chain_ids,
                    "snapshots": self.images.snapshot_dirs(image),
                    "imageSpec": self.images.config_of(image),
                }
            )
        return pb.ImageStatusResponse(image=image_message(image), info=info)

    async def RemoveImage(self, request: pb.RemoveImageRequest, context: Any) -> pb.RemoveImageResponse:
        if not request.image.image:
            raise InvalidArgument("RemoveImage: image is empty")
        await self.images.remove(request.image.image)
        return pb.RemoveImageResponse()

    async def ImageFsInfo(self, request: pb.ImageFsInfoRequest, context: Any) -> pb.ImageFsInfoResponse:
        used, inodes = await self.images.usage()
        usage = pb.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=pb.FilesystemIdentifier(mountpoint=self.images.snapshots.dir),
            used_bytes=pb.UInt64Value(value=used),
            inodes_used=pb.UInt64Value(value=inodes),
        )
        return pb.ImageFsInfoResponse(image_filesystems=[usage])
