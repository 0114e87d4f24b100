"""List replies served as cached wire bytes: the same bytes a client parses into the
messages crid would have built, and a state change shows in the next reply."""

from pathlib import Path

import pytest
from google.protobuf.message import Message

from cri.api.v1 import api_pb2 as pb
from cri.runtime.container_store import Container, ContainerStore
from cri.runtime.container_store import State as CState
from cri.runtime.sandbox_store import Sandbox, State
from cri.server.messages import LIST_ITEMS_FIELD, container_message, sandbox_message
from cri.server.rpc import _serialize
from cri.server.runtime_service import _VERSION, _Listing
from cri.store import Store

LIST_REPLIES = (
    (pb.ListContainersResponse, "containers"),
    (pb.StreamContainersResponse, "containers"),
    (pb.ListPodSandboxResponse, "items"),
    (pb.StreamPodSandboxesResponse, "pod_sandboxes"),
)


def _container(n: int, state: CState = CState.RUNNING, note: str = "") -> Container:
    config = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=f"c{n}", attempt=1),
        labels={"app": "x", "n": str(n)},
        annotations={"note": note} if note else {},
    )
    return Container(
        id=f"{n:064x}", name=f"c{n}", fingerprint="", sandbox_id="ab" * 32, state=state, created_at=n,
        config=config, image_name="busybox:1", image_ref="sha256:" + "1" * 64, image_id="sha256:" + "2" * 64,
    )  # fmt: skip


def _sandbox(n: int, state: State = State.READY) -> Sandbox:
    config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name=f"p{n}", uid=str(n), namespace="ns"))
    return Sandbox(
        id=f"{n:064x}", name=f"p{n}", fingerprint="", handler="runc", state=state, created_at=n, config=config
    )


@pytest.mark.parametrize(("reply", "field"), LIST_REPLIES)
def test_the_items_are_the_only_field_and_it_is_the_shared_one(reply: type[Message], field: str) -> None:
    fields = reply.DESCRIPTOR.fields
    assert [(f.name, f.number) for f in fields] == [(field, LIST_ITEMS_FIELD)]


# sizes around the varint boundaries of the entry length (1, 2 and 3 bytes)
@pytest.mark.parametrize("note", ["", "x" * 200, "y" * 20_000])
def test_container_reply_parses_to_the_built_messages(note: str) -> None:
    found = [_container(1), _container(2, CState.EXITED, note), _container(3, CState.CREATED)]
    listing = _Listing(container_message)
    wire = listing.reply(found, {c.id for c in found})
    for reply in (pb.ListContainersResponse, pb.StreamContainersResponse):
        assert reply.FromString(wire) == reply(containers=[container_message(c) for c in found])


def test_a_state_change_shows_in_the_next_reply() -> None:
    c = _container(1, CState.CREATED)
    listing = _Listing(container_message)
    first = pb.ListContainersResponse.FromString(listing.reply([c], {c.id}))
    c.state = CState.RUNNING
    second = pb.ListContainersResponse.FromString(listing.reply([c], {c.id}))
    assert (first.containers[0].state, second.containers[0].state) == (pb.CONTAINER_CREATED, pb.CONTAINER_RUNNING)


def test_pod_reply_and_an_empty_one() -> None:
    pods = [_sandbox(1), _sandbox(2, State.NOTREADY)]
    listing = _Listing(sandbox_message)
    wire = listing.reply(pods, {p.id for p in pods})
    assert pb.ListPodSandboxResponse.FromString(wire) == pb.ListPodSandboxResponse(
        items=[sandbox_message(p) for p in pods]
    )
    assert listing.reply([], set()) == b"" == pb.ListPodSandboxResponse().SerializeToString()


def test_removed_objects_leave_the_cache() -> None:
    listing = _Listing(container_message)
    many = [_container(n) for n in range(40)]
    listing.reply(many, {c.id for c in many})
    listing.reply(many[:1], {many[0].id})
    assert len(listing._cache) == 1


def test_replies_pass_the_serializer_as_they_are() -> None:
    assert pb.VersionResponse.FromString(_serialize(_VERSION)).runtime_name == "crid"
    assert _serialize(pb.VersionResponse(version="1")) == pb.VersionResponse(version="1").SerializeToString()


def test_a_kept_reply_is_made_again_only_when_the_generation_moves() -> None:
    listing = _Listing(container_message)
    made: list[int] = []

    def make(n: int) -> bytes:
        made.append(n)
        return listing.reply([_container(n)], {_container(n).id})

    running = pb.ContainerFilter(state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING))
    first = listing.kept(None, 1, lambda: make(1))
    assert listing.kept(None, 1, lambda: make(2)) == first  # same generation: the kept bytes
    assert listing.kept(pb.ContainerFilter(), 1, lambda: make(3)) == first  # an empty filter is no filter
    listing.kept(running, 1, lambda: make(4))  # another filter: its own reply
    moved = listing.kept(None, 2, lambda: make(5))
    assert made == [1, 4, 5] and pb.ListContainersResponse.FromString(moved).containers[0].metadata.name == "c5"


def test_every_write_of_a_record_moves_the_generation(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    containers = ContainerStore(store)
    seen = [containers.generation]
    c = _container(1, CState.CREATED)
    containers.add(c)
    seen.append(containers.generation)
    containers.update(c, state=CState.RUNNING)
    seen.append(containers.generation)
    containers.delete(c)
    seen.append(containers.generation)
    store.close()
    assert seen == sorted(set(seen))  # strictly increasing
