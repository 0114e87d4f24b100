"""GetContainerEvents end to end: real crid daemons, busybox containers under
runc and conmon, and event streams read over gRPC as kubelet's Evented PLEG
reads them."""

import json
import os
import queue
import re
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from cri.api.client import CriClient
from cri.api.v1 import api_pb2 as pb
from tests.e2e.conftest import Daemons
from tests.e2e.container_pod import Pod
from tests.e2e.harness import CridProcess
from tests.support import oci_build as ob
from tests.support.registry import Registry

CREATED, STARTED = pb.CONTAINER_CREATED_EVENT, pb.CONTAINER_STARTED_EVENT
STOPPED, DELETED = pb.CONTAINER_STOPPED_EVENT, pb.CONTAINER_DELETED_EVENT
# host network: no CNI needed, the events are the same
HOSTNET = {"security_context": pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(network=pb.NODE))}
RPC_TIMEOUT = 20  # a lifecycle call held up by a subscriber fails with DEADLINE_EXCEEDED


@pytest.fixture(scope="module")
def env(e2e_base: Path) -> Iterator[tuple[CridProcess, str]]:
    """One registry, one daemon, the test image pulled."""
    base = Path(tempfile.mkdtemp(prefix="ev", dir=e2e_base))
    image = ob.Image([ob.busybox_layer("gzip")], ob.ImageConfig(cmd=["sh"], env=["PATH=/bin"]))
    with Registry(base / "reg") as reg:
        reg.push("e2e/busybox", "1", image)
        d = CridProcess(base).start()
        ref = f"{reg.host}/e2e/busybox:1"
        pull(d, ref)
        try:
            yield d, ref
        finally:
            d.remove_all_pods()
            d.stop()


def pull(d: CridProcess, ref: str) -> None:
    d.client.image.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=ref)), timeout=60)


Match = Callable[[pb.ContainerEventResponse], bool]


class Subscriber:
    """A GetContainerEvents stream on its own connection, read by a thread
    (or not at all: ``read=False`` is a client that stalls)."""

    def __init__(self, d: CridProcess, read: bool = True) -> None:
        self.client = CriClient(d.socket)
        self.call = self.client.runtime.GetContainerEvents(pb.GetEventsRequest(), timeout=600)
        self.call.initial_metadata()  # crid sends its headers once the subscription exists
        self.events: queue.Queue[pb.ContainerEventResponse] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self.ended = threading.Event()
        if read:
            self.start_reading()

    def start_reading(self) -> None:
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for e in self.call:
                self.events.put(e)
        except grpc.RpcError as exc:
            self.error = exc
        self.ended.set()

    def until(self, done: Match, timeout: float = 20) -> list[pb.ContainerEventResponse]:
        """Events up to and including the first for which ``done`` is true."""
        out: list[pb.ContainerEventResponse] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                e = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout}s; got {summary(out)}") from None
            out.append(e)
            if done(e):
                return out

    def quiet(self, seconds: float = 0.5) -> list[pb.ContainerEventResponse]:
        """Whatever arrives within ``seconds``."""
        time.sleep(seconds)
        out: list[pb.ContainerEventResponse] = []
        while not self.events.empty():
            out.append(self.events.get())
        return out

    def close(self) -> None:
        self.call.cancel()
        self.client.close()


def summary(events: list[pb.ContainerEventResponse]) -> list[tuple[str, int]]:
    return [(e.container_id, e.container_event_type) for e in events]


def is_event(cid: str, kind: int) -> Match:
    return lambda e: (e.container_id, e.container_event_type) == (cid, kind)


def status_of(e: pb.ContainerEventResponse, cid: str) -> pb.ContainerStatus | None:
    return next((s for s in e.containers_statuses if s.id == cid), None)


def container_pid(d: CridProcess, cid: str) -> int:
    info = d.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info["info"]
    return int(json.loads(info)["pid"])


def stop_and_remove(pod: Pod, cid: str) -> None:
    rt = pod.d.client.runtime
    rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0), timeout=RPC_TIMEOUT)
    rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=RPC_TIMEOUT)


def metric(d: CridProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://{d.metrics_address}/metrics", timeout=10) as r:
        text = r.read().decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} not on /metrics"
    return float(m.group(1))


# --- the stream -------------------------------------------------------------------------


def test_lifecycle_of_a_container_and_its_pod_in_order(env: tuple[CridProcess, str]) -> None:
    d, image = env
    sub = Subscriber(d)
    try:
        t0 = time.time_ns()
        pod = Pod(d, image, "ev-order", **HOSTNET)
        cid = pod.run("sleeper", ["sleep", "600"])
        stop_and_remove(pod, cid)
        pod.remove()
        events = sub.until(is_event(pod.id, DELETED))
        assert summary(events) == [
            (pod.id, CREATED), (pod.id, STARTED),
            (cid, CREATED), (cid, STARTED), (cid, STOPPED), (cid, DELETED),
            (pod.id, STOPPED), (pod.id, DELETED),
        ]  # fmt: skip
        stamps = [e.created_at for e in events]
        assert stamps == sorted(stamps) and t0 <= stamps[0] and stamps[-1] <= time.time_ns()
        for e in events:  # every event names its pod, with the uid kubelet files it under
            st = e.pod_sandbox_status
            assert (st.id, st.metadata.uid, st.metadata.name) == (pod.id, "uid-ev-order", "ev-order")
        by = dict(zip(summary(events), events, strict=True))
        assert by[pod.id, STARTED].pod_sandbox_status.state == pb.SANDBOX_READY
        created = status_of(by[cid, CREATED], cid)
        assert created is not None and created.metadata.name == "sleeper" and created.image.image == image
        started = status_of(by[cid, STARTED], cid)
        assert started is not None and started.state == pb.CONTAINER_RUNNING and started.started_at > 0
        stopped = status_of(by[cid, STOPPED], cid)
        assert stopped is not None and (stopped.state, stopped.exit_code) == (pb.CONTAINER_EXITED, 137)
        assert status_of(by[cid, DELETED], cid) is None  # gone from the pod's containers
        # a removed pod is still reported as it last was: kubelet needs its uid to forget it
        gone = by[pod.id, DELETED]
        assert gone.pod_sandbox_status.state == pb.SANDBOX_NOTREADY and not gone.containers_statuses
        assert sub.quiet() == []  # nothing else: no duplicate stop of the pod either
    finally:
        sub.close()


def test_two_subscribers_both_get_everything(env: tuple[CridProcess, str]) -> None:
    d, image = env
    a, b = Subscriber(d), Subscriber(d)
    try:
        pod = Pod(d, image, "ev-two", **HOSTNET)
        first = pod.run("one", ["sleep", "600"])
        second = pod.run("two", ["true"])
        stop_and_remove(pod, first)
        pod.wait(second)
        pod.remove()
        got_a, got_b = summary(a.until(is_event(pod.id, DELETED))), summary(b.until(is_event(pod.id, DELETED)))
        assert got_a == got_b and len(got_a) == 2 + 4 + 4 + 2
        assert {(second, k) for k in (CREATED, STARTED, STOPPED, DELETED)} <= set(got_a)
    finally:
        a.close()
        b.close()


def test_quick_exits_come_after_their_start(env: tuple[CridProcess, str]) -> None:
    """A container that exits while StartContainer is still in progress is
    reported started, then stopped, never the other way round."""
    d, image = env
    pod = Pod(d, image, "ev-quick", **HOSTNET)
    sub = Subscriber(d)
    try:
        for i in range(30):  # the race is lost about one time in five
            cid = pod.run(f"quick{i}", ["true"])
            events = sub.until(is_event(cid, STOPPED))
            assert summary(events) == [(cid, CREATED), (cid, STARTED), (cid, STOPPED)]
            st = status_of(events[-1], cid)
            assert st is not None and (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 0, "Completed")
        assert sub.quiet(0.3) == []
    finally:
        sub.close()
        pod.remove()


def test_a_killed_container_is_reported_stopped(env: tuple[CridProcess, str]) -> None:
    d, image = env
    pod = Pod(d, image, "ev-kill", **HOSTNET)
    sub = Subscriber(d)
    try:
        cid = pod.run("victim", ["sleep", "600"])
        sub.until(is_event(cid, STARTED))
        os.kill(container_pid(d, cid), signal.SIGKILL)  # not through crid: the exit watcher notices
        (e,) = sub.until(is_event(cid, STOPPED))
        st = status_of(e, cid)
        assert st is not None and (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 137, "Error")
    finally:
        sub.close()
        pod.remove()


# --- slow subscribers ---------------------------------------------------------------------


def test_a_stalled_subscriber_does_not_hold_up_the_lifecycle(env: tuple[CridProcess, str], daemons: Daemons) -> None:
    _, image = env
    d = daemons.start("slow", runtime={"container_events_queue": 5})
    pull(d, image)
    stalled = Subscriber(d, read=False)  # subscribed, never reads: its queue fills, then drops
    live = Subscriber(d)
    pod = Pod(d, image, "ev-slow", **HOSTNET)
    try:
        begin = time.monotonic()
        ids = []
        # gRPC holds some MiB of a stream's messages before a write waits for the reader: with each
        # message carrying every container's big annotation, the stalled stream's writes stop early
        big = {"padding": "x" * 100_000}
        for i in range(20):  # each call would hit its deadline if publishing waited for the stalled reader
            ids.append(pod.create(f"c{i}", ["sleep", "600"], annotations=big))
            d.client.runtime.StartContainer(pb.StartContainerRequest(container_id=ids[-1]), timeout=RPC_TIMEOUT)
        elapsed = time.monotonic() - begin
        print(f"20 create+start cycles with a stalled subscriber: {elapsed:.2f}s")
        # the subscriber that reads lost nothing
        got = summary(live.until(is_event(ids[-1], STARTED)))
        assert got == [(pod.id, CREATED), (pod.id, STARTED)] + [(c, k) for c in ids for k in (CREATED, STARTED)]
        assert metric(d, "crid_container_events_dropped_total") > 0
        assert len(d.log_records("container events subscriber is not keeping up; dropping its oldest events")) == 1
        # once it reads, the stalled one gets the newest events (the oldest were dropped)
        stalled.start_reading()
        late = summary(stalled.until(is_event(ids[-1], STARTED)))
        assert len(late) < len(got) and late[-5:] == got[-5:]
        assert late == [x for x in got if x in late]  # in order, with a gap
    finally:
        stalled.close()
        live.close()
        pod.remove()


# --- across restarts ---------------------------------------------------------------------


def test_restart_ends_streams_and_new_subscribers_see_new_events(
    env: tuple[CridProcess, str], daemons: Daemons
) -> None:
    _, image = env
    d = daemons.start("restart")
    pull(d, image)
    pod = Pod(d, image, "ev-restart", **HOSTNET)
    sub = Subscriber(d)
    try:
        ender = pod.run("ender", ["sh", "-c", "sleep 2; exit 5"])
        runner = pod.run("runner", ["sleep", "600"])
        sub.until(is_event(runner, STARTED))
        begin = time.monotonic()
        assert d.stop() == 0
        # the stream is ended by the server at shutdown, not cut off after the grace period
        assert sub.ended.wait(5) and sub.error is not None
        assert sub.error.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in sub.error.details()
        assert time.monotonic() - begin < d.config.grpc.shutdown_grace_seconds
        time.sleep(2.5)  # "ender" exits while crid is down
        d.start()
        after = Subscriber(d)
        try:
            # recovery found the exit before anyone could subscribe: it is in the status, not replayed as an event
            st = pod.status(ender)
            assert (st.state, st.exit_code) == (pb.CONTAINER_EXITED, 5)
            assert after.quiet() == []
            # exits noticed after the restart are events again, and so is the rest of the lifecycle
            os.kill(container_pid(d, runner), signal.SIGKILL)
            (e,) = after.until(is_event(runner, STOPPED))
            assert e.pod_sandbox_status.metadata.uid == "uid-ev-restart"
            assert {s.id: s.exit_code for s in e.containers_statuses} == {ender: 5, runner: 137}
            pod.remove()
            rest = summary(after.until(is_event(pod.id, DELETED)))
            assert rest[0] == (pod.id, STOPPED) and rest[-1] == (pod.id, DELETED)
            assert sorted(rest[1:-1]) == sorted([(ender, DELETED), (runner, DELETED)])  # removed side by side
        finally:
            after.close()
    finally:
        sub.close()
        if d.proc is None or d.proc.poll() is not None:
            d.start()
        pod.remove()
