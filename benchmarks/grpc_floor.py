"""The floors of a CRI server in Python: a bare grpc.aio server
(benchmarks/grpc_floor_server.py) answering Version with bytes serialized
once, no wrapper, no logging, no metrics, no crid code.

The round trips are timed call by call in turns with the runtime's own (the runtime, the bare
server, the runtime, ...), so that the machine's drift, which moves a p50 by 10 % from one
workload to the next here, hits both alike: Version, and ListContainers of the bytes of the
runtime's own 100-container reply. Each runtime's column then says how far it is from that
server beside it.

The idle RSS rows put the bare server in crid's column and containerd in its own: the bare
server, and the same server with the libraries crid is built on imported (the floor of a
daemon made of those parts).
"""

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

from benchmarks.core import CriTarget, Params, Row, RowSamples, cri_rows_workload, cri_workload
from benchmarks.cri_calls import LIST_100_RPCS, hundred_containers
from benchmarks.workloads import WARMUP, rss_samples
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


def alternated(calls: dict[str, Callable[[], object]], count: int) -> RowSamples:
    """``count`` timed calls of each, call by call in turns (the first one first in every other
    turn), so that what drifts on this machine hits each the same; {key: samples}."""
    keys = list(calls)
    timings: dict[str, list[float]] = {key: [] for key in keys}
    for _ in range(min(WARMUP, count)):
        for key in keys:
            calls[key]()
    for i in range(count):
        for key in keys if i % 2 == 0 else keys[::-1]:
            t0 = time.perf_counter()
            calls[key]()
            timings[key].append(time.perf_counter() - t0)
    return {key: samples for key, samples in timings.items()}


@cri_rows_workload(
    "version_floor",
    (
        Row("own", "CRI Version round trip, call by call alternated with a bare grpc.aio server's"),
        Row("floor", "floor: Version round trip of that bare grpc.aio server (the same server in both columns)"),
    ),
    count=1000,
)
def version_floor(t: CriTarget, p: Params) -> RowSamples:
    req = pb.VersionRequest(version="0.1.0")
    with floor_server(p.workdir) as (floor, _):
        return alternated(
            {"own": lambda: t.client.runtime.Version(req), "floor": lambda: floor.runtime.Version(req)}, p.count
        )


@cri_rows_workload(
    "list_containers_100_floor",
    (
        Row("own", "ListContainers, 100 containers, call by call alternated with the bare server's"),
        Row("floor", "floor: ListContainers of the runtime's own 100-container reply from a bare grpc.aio server"),
    ),
    count=200,
    runs=2,
    rpcs=LIST_100_RPCS,
    needs_images=True,
)
def list_containers_100_floor(t: CriTarget, p: Params) -> RowSamples:
    req = pb.ListContainersRequest()
    with hundred_containers(t, p):
        reply = t.client.runtime.ListContainers(req, timeout=60).SerializeToString()  # as the runtime sends it
        with floor_server(p.workdir, reply) as (floor, _):
            own, bare = t.client.runtime, floor.runtime
            return alternated(
                {"own": lambda: own.ListContainers(req), "floor": lambda: bare.ListContainers(req)}, p.count
            )


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
