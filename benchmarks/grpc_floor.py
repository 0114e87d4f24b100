"""The floors of a CRI server in Python: a bare grpc.aio server
(benchmarks/grpc_floor_server.py) answering Version with bytes serialized
once, no wrapper, no logging, no metrics, no crid code. Its rows put that
server in crid's column and containerd in its own, so the ratio says how much
of crid's figure is grpc.aio itself: the Version round trip, ListContainers
with the bytes of crid's own 100-container reply, and the idle RSS, of the bare server and of
the same server with the libraries crid is built on imported (the floor of a daemon made of
those parts).
"""

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from benchmarks.core import CriTarget, Params, cri_workload
from benchmarks.workloads import LIST_100_RPCS, hundred_containers, list_containers_100, rss_samples, timed
from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb

START_TIMEOUT = 20.0


@contextmanager
def floor_server(workdir: Path, list_reply: bytes = b"", libraries: bool = False) -> Iterator[tuple[CriClient, int]]:
    """The bare server started and answering; (a client of it, its pid)."""
    socket = str(workdir / "floor.sock")
    Path(socket).unlink(missing_ok=True)  # an earlier round's
    reply_file = workdir / "floor-list-reply.bin"
    reply_file.write_bytes(list_reply)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.grpc_floor_server", socket, str(reply_file)]
        + (["--libraries"] if libraries else []),
        stdin=subprocess.DEVNULL,
    )
    try:
        with CriClient(socket) as client:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                try:
                    client.runtime.Version(pb.VersionRequest(), timeout=1, wait_for_ready=True)
                    break
                except grpc.RpcError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
            yield client, proc.pid
    finally:
        proc.terminate()
        proc.wait()


def _floor_samples(workdir: Path, count: int, list_reply: bytes = b"") -> list[float]:
    """Version (or, given ``list_reply``, ListContainers) against the bare server, ``count`` times."""
    with floor_server(workdir, list_reply) as (client, _):
        if list_reply:
            listing = pb.ListContainersRequest()
            return timed(lambda: client.runtime.ListContainers(listing), count)
        req = pb.VersionRequest(version="0.1.0")
        return timed(lambda: client.runtime.Version(req), count)


@cri_workload("version_floor", "Version round trip: a bare grpc.aio server in crid's column (the floor)", count=2000)
def version_floor(t: CriTarget, p: Params) -> list[float]:
    if t.name != "crid":
        req = pb.VersionRequest(version="0.1.0")
        return timed(lambda: t.client.runtime.Version(req), p.count)
    return _floor_samples(p.workdir, p.count)


@cri_workload(
    "list_containers_100_floor",
    "ListContainers, 100 containers: the bare grpc.aio server with crid's reply in crid's column (the floor)",
    count=200,
    runs=2,
    rpcs=LIST_100_RPCS,
    needs_images=True,
)
def list_containers_100_floor(t: CriTarget, p: Params) -> list[float]:
    if t.name != "crid":
        return list_containers_100(t, p)
    with hundred_containers(t, p):  # crid's own reply, serialized as it sends it
        reply = t.client.runtime.ListContainers(pb.ListContainersRequest(), timeout=60).SerializeToString()
    return _floor_samples(p.workdir, p.count, reply)


@cri_workload(
    "rss_idle_floor", "daemon RSS, idle: the bare grpc.aio server in crid's column (the floor)", unit="bytes", count=10
)
def rss_idle_floor(t: CriTarget, p: Params) -> list[float]:
    if t.name != "crid":
        return rss_samples(t.pid, p.count)
    return _floor_rss(p, libraries=False)


@cri_workload(
    "rss_idle_libraries_floor",
    "daemon RSS, idle: the bare grpc.aio server with crid's libraries imported in crid's column (the floor)",
    unit="bytes",
    count=10,
)
def rss_idle_libraries_floor(t: CriTarget, p: Params) -> list[float]:
    if t.name != "crid":
        return rss_samples(t.pid, p.count)
    return _floor_rss(p, libraries=True)


def _floor_rss(p: Params, libraries: bool) -> list[float]:
    with floor_server(p.workdir, libraries=libraries) as (client, pid):
        client.runtime.Version(pb.VersionRequest(), timeout=10)  # it has served a call, as crid has
        return rss_samples(pid, p.count)
