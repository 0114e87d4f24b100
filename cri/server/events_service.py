"""GetContainerEvents: the event stream of kubelet's Evented PLEG.

Each stream is one subscriber of the domain's event bus (cri/runtime/events.py
has the ordering, drop and restart rules). A message is built when it is
sent, not when the event happened: it carries the pod's and its containers'
statuses of that moment (kubelet stores them as the pod's state), and
``created_at`` is the time of the event. A pod's own events have the pod's id
as container id, as containerd and CRI-O send them; a removed pod is reported
as it last was, so that its metadata (kubelet keys events by the pod's uid)
is still there.
"""

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from cri.api.v1 import api_pb2 as pb
from cri.errors import Unavailable
from cri.log import fields
from cri.runtime.container_store import Container
from cri.runtime.container_store import State as CState
from cri.runtime.containers import Containers
from cri.runtime.events import Event, Kind
from cri.runtime.pods import Pods
from cri.server.messages import container_status, sandbox_status

log = logging.getLogger(__name__)

_TYPES = {
    Kind.CREATED: pb.CONTAINER_CREATED_EVENT,
    Kind.STARTED: pb.CONTAINER_STARTED_EVENT,
    Kind.STOPPED: pb.CONTAINER_STOPPED_EVENT,
    Kind.DELETED: pb.CONTAINER_DELETED_EVENT,
}


def event_message(event: Event, pod_containers: Iterable[Container]) -> pb.ContainerEventResponse:
    return pb.ContainerEventResponse(
        container_id=event.container_id,
        container_event_type=_TYPES[event.kind],
        created_at=event.created_at,
        pod_sandbox_status=sandbox_status(event.sandbox),
        containers_statuses=[container_status(c) for c in pod_containers if c.state != CState.CREATING],
    )


class EventsServicer:
    """Mixed into RuntimeServicer."""

    pods: Pods
    containers: Containers

    async def GetContainerEvents(
        self, request: pb.GetEventsRequest, context: Any
    ) -> AsyncIterator[pb.ContainerEventResponse]:
        with self.pods.events.subscribe() as sub:
            # the headers tell the client it is subscribed: what happens from now on reaches it
            await context.send_initial_metadata(())
            log.info("container events subscriber connected", extra=fields(subscriber=sub.number, peer=context.peer()))
            async for event in sub:
                yield event_message(event, self.containers.of_pod(event.sandbox.id))
        # the bus closes only at shutdown; a client sees UNAVAILABLE, as from containerd, and reconnects
        raise Unavailable("container events subscription closed by the server: crid is shutting down")
