"""Pod sandboxes end to end: a real crid, real CNI plugins (bridge, host-local,
portmap from containernetworking-plugins), runc and catatonit."""

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.conftest import Daemons
from tests.e2e.harness import CridProcess
from tests.support.cni_net import Network

_counter = iter(range(10, 250))


@pytest.fixture
def network(e2e_base: Path) -> Iterator[Network]:
    net = Network(Path(tempfile.mkdtemp(prefix="net", dir=e2e_base)), next(_counter))
    yield net
    net.cleanup()


@pytest.fixture
def crid(daemons: Daemons, network: Network) -> CridProcess:
    return daemons.start(**network.settings())


def pod_config(name: str = "web", **kw: Any) -> pb.PodSandboxConfig:
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, namespace="e2e", uid=f"uid-{name}", attempt=kw.pop("attempt", 0)),
        hostname=kw.pop("hostname", name),
        labels=kw.pop("labels", {"app": name}),
        annotations={"note": "e2e"},
        **kw,
    )
    return cfg


def run_pod(d: CridProcess, cfg: pb.PodSandboxConfig, timeout: float = 60) -> str:
    return str(d.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=timeout).pod_sandbox_id)


def pod_status(d: CridProcess, pod_id: str) -> tuple[pb.PodSandboxStatus, dict[str, Any]]:
    resp = d.client.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id, verbose=True))
    return resp.status, json.loads(resp.info["info"])


def stop_and_remove(d: CridProcess, pod_id: str) -> None:
    d.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    d.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def in_netns(netns: str, *cmd: str, timeout: float = 10) -> str:
    return subprocess.run(
        ["nsenter", f"--net={netns}", *cmd], capture_output=True, text=True, check=True, timeout=timeout
    ).stdout


LISTENER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(); print('ready', flush=True)\n"
    "c,_=s.accept(); c.sendall(b'hello from pod'); c.close()\n"
)


def listen_in(netns: str, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        ["nsenter", f"--net={netns}", sys.executable, "-c", LISTENER, str(port)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def pod_files(d: CridProcess, pod_id: str) -> Path:
    return Path(d.root) / "sandboxes" / pod_id


# --- the pod itself ---------------------------------------------------------------------


def test_pod_gets_ip_namespaces_and_files(crid: CridProcess, network: Network) -> None:
    cfg = pod_config(
        "files",
        hostname="files-host",
        dns_config=pb.DNSConfig(servers=["10.96.0.10"], searches=["e2e.svc.cluster.local"], options=["ndots:5"]),
        linux=pb.LinuxPodSandboxConfig(sysctls={"net.ipv4.ip_unprivileged_port_start": "80"}),
    )
    pod_id = run_pod(crid, cfg)
    try:
        assert len(pod_id) == 64
        status, info = pod_status(crid, pod_id)
        assert status.state == pb.SANDBOX_READY
        assert status.network.ip.startswith(network.subnet_prefix + ".")
        assert status.metadata.name == "files" and status.labels["app"] == "files"
        assert status.annotations["note"] == "e2e"
        netns = info["netnsPath"]
        addrs = in_netns(netns, "ip", "-o", "-4", "addr")
        assert f"inet {status.network.ip}/24" in addrs and "eth0" in addrs
        assert "127.0.0.1/8" in addrs
        assert "UP" in in_netns(netns, "ip", "link", "show", "lo")
        assert in_netns(netns, "cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start").strip() == "80"
        uts = info["namespaces"]["uts"]
        hostname = subprocess.run(["nsenter", f"--uts={uts}", "hostname"], capture_output=True, text=True).stdout
        assert hostname.strip() == "files-host"
        files = pod_files(crid, pod_id)
        assert (files / "hostname").read_text() == "files-host\n"
        resolv = (files / "resolv.conf").read_text()
        assert "nameserver 10.96.0.10" in resolv and "search e2e.svc.cluster.local" in resolv
        assert "options ndots:5" in resolv
        assert f"{status.network.ip}\tfiles-host" in (files / "hosts").read_text()
        shm = Path(crid.state) / "sandboxes" / pod_id / "shm"
        assert os.path.ismount(shm)
    finally:
        stop_and_remove(crid, pod_id)
    assert network.reservations() == []
    assert not pod_files(crid, pod_id).exists()


def test_pod_without_hostname_gets_the_nodes(crid: CridProcess) -> None:
    cfg = pod_config("x" * 70, hostname="")  # a long pod name is not a hostname (critest's pods look like this)
    pod_id = run_pod(crid, cfg)
    try:
        assert (pod_files(crid, pod_id) / "hostname").read_text().strip() == socket.gethostname()
    finally:
        stop_and_remove(crid, pod_id)
    with pytest.raises(grpc.RpcError) as err:
        run_pod(crid, pod_config("longhost", hostname="h" * 65))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_two_pods_reach_each_other(crid: CridProcess) -> None:
    a, b = run_pod(crid, pod_config("a")), run_pod(crid, pod_config("b"))
    try:
        (sa, ia), (sb, ib) = pod_status(crid, a), pod_status(crid, b)
        assert sa.network.ip != sb.network.ip
        listener = listen_in(ia["netnsPath"], 8080)
        got = in_netns(
            ib["netnsPath"],
            sys.executable,
            "-c",
            f"import socket; s=socket.create_connection(('{sa.network.ip}', 8080), 5); print(s.recv(100).decode())",
        )
        assert got.strip() == "hello from pod"
        listener.wait(5)
    finally:
        stop_and_remove(crid, a)
        stop_and_remove(crid, b)


def test_host_port_reaches_the_pod(crid: CridProcess) -> None:
    host_port = 20000 + secrets.randbelow(20000)
    cfg = pod_config(
        "hostport", port_mappings=[pb.PortMapping(protocol=pb.TCP, container_port=8081, host_port=host_port)]
    )
    pod_id = run_pod(crid, cfg)
    try:
        status, info = pod_status(crid, pod_id)
        listener = listen_in(info["netnsPath"], 8081)
        gateway = status.network.ip.rsplit(".", 1)[0] + ".1"  # the bridge: the host's IP on the pod network
        with socket.create_connection((gateway, host_port), 5) as s:
            assert s.recv(100) == b"hello from pod"
        listener.wait(5)
        listener = listen_in(info["netnsPath"], 8081)
        with socket.create_connection(("127.0.0.1", host_port), 5) as s:
            assert s.recv(100) == b"hello from pod"
        listener.wait(5)
    finally:
        stop_and_remove(crid, pod_id)


def test_thirty_concurrent_pods_get_distinct_ips_and_leave_nothing(crid: CridProcess, network: Network) -> None:
    ids: list[str] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            ids.append(run_pod(crid, pod_config(f"many{i}")))
        except grpc.RpcError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ips = {pod_status(crid, i)[0].network.ip for i in ids}
    assert len(ips) == 30
    assert len(network.reservations()) == 30
    listed = crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert {p.id for p in listed} == set(ids)
    threads = [threading.Thread(target=stop_and_remove, args=(crid, i)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert network.reservations() == []
    assert os.listdir(Path(crid.state) / "sandboxes") == []
    assert os.listdir(Path(crid.root) / "sandboxes") == []


def test_stop_and_remove_are_idempotent(crid: CridProcess) -> None:
    pod_id = run_pod(crid, pod_config("idem"))
    for _ in range(2):
        crid.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    status, _ = pod_status(crid, pod_id)
    assert status.state == pb.SANDBOX_NOTREADY
    for _ in range(2):
        crid.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
    with pytest.raises(grpc.RpcError) as err:
        crid.client.runtime.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    unknown = "f" * 64
    crid.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=unknown))
    crid.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=unknown))


def test_list_filters(crid: CridProcess) -> None:
    a = run_pod(crid, pod_config("fa", labels={"tier": "front"}))
    b = run_pod(crid, pod_config("fb", labels={"tier": "back"}))
    try:
        crid.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=b))

        def listed(f: pb.PodSandboxFilter) -> set[str]:
            return {p.id for p in crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest(filter=f)).items}

        assert listed(pb.PodSandboxFilter(id=a[:12])) == {a}
        assert listed(pb.PodSandboxFilter(label_selector={"tier": "back"})) == {b}
        assert listed(pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_READY))) == {a}
        assert listed(pb.PodSandboxFilter(state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY))) == {b}
        streamed = [
            p.id
            for r in crid.client.runtime.StreamPodSandboxes(pb.StreamPodSandboxesRequest())
            for p in r.pod_sandboxes
        ]
        assert sorted(streamed) == sorted([a, b])
    finally:
        stop_and_remove(crid, a)
        stop_and_remove(crid, b)


def test_bad_requests(crid: CridProcess) -> None:
    def code(cfg: pb.PodSandboxConfig, handler: str = "") -> grpc.StatusCode:
        with pytest.raises(grpc.RpcError) as err:
            crid.client.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg, runtime_handler=handler))
        return err.value.code()

    assert code(pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="x"))) == grpc.StatusCode.INVALID_ARGUMENT
    node_sysctl = pod_config("sysctl", linux=pb.LinuxPodSandboxConfig(sysctls={"kernel.panic": "1"}))
    assert code(node_sysctl) == grpc.StatusCode.INVALID_ARGUMENT
    bad_value = pod_config("badval", linux=pb.LinuxPodSandboxConfig(sysctls={"net.ipv4.ip_forward": "x"}))
    assert code(bad_value) == grpc.StatusCode.INVALID_ARGUMENT
    assert code(pod_config("nohandler"), handler="kata") == grpc.StatusCode.NOT_FOUND
    assert crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []


def test_missing_or_invalid_cni_config(crid: CridProcess, network: Network) -> None:
    conf = network.conf_dir / "10-test.conflist"
    conf.write_text("{ not json")
    cond = {c.type: c for c in crid.client.runtime.Status(pb.StatusRequest()).status.conditions}["NetworkReady"]
    assert not cond.status and cond.reason and cond.message
    with pytest.raises(grpc.RpcError) as err:
        run_pod(crid, pod_config("nocni"))
    assert err.value.code() in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE)
    conf.unlink()
    cond = {c.type: c for c in crid.client.runtime.Status(pb.StatusRequest()).status.conditions}["NetworkReady"]
    assert not cond.status and cond.reason == "NetworkPluginNotReady"
    assert crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert os.listdir(Path(crid.state) / "sandboxes") == []
    network.write()
    assert {c.type: c for c in crid.client.runtime.Status(pb.StatusRequest()).status.conditions}["NetworkReady"].status


def test_host_network_pod_has_no_netns_and_no_cni(crid: CridProcess, network: Network) -> None:
    opts = pb.NamespaceOption(network=pb.NODE, ipc=pb.NODE)
    cfg = pod_config(
        "hostnet",
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(namespace_options=opts)),
    )
    pod_id = run_pod(crid, cfg)
    try:
        status, info = pod_status(crid, pod_id)
        assert info["netnsPath"] == "" and info["namespaces"] == {}
        assert status.network.ip == ""
        assert status.linux.namespaces.options.network == pb.NODE
        assert network.reservations() == []
        assert (pod_files(crid, pod_id) / "hostname").read_text().strip() == socket.gethostname()
    finally:
        stop_and_remove(crid, pod_id)


def test_shared_pid_namespace_infra(crid: CridProcess) -> None:
    opts = pb.NamespaceOption(pid=pb.POD)
    cfg = pod_config(
        "pidns", linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(namespace_options=opts))
    )
    pod_id = run_pod(crid, cfg)
    _, info = pod_status(crid, pod_id)
    pid = info["infraPid"]
    assert pid > 0
    nspid = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("NSpid:"))
    assert nspid.split()[1:] == [str(pid), "1"]
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "catatonit"
    netns_ino = os.stat(info["netnsPath"]).st_ino
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns_ino
    crid.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod_id))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    crid.client.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod_id))


def test_cgroup_parent_is_created_and_removed(crid: CridProcess) -> None:
    parent = f"/crid-e2e-{secrets.token_hex(4)}/pod-x"
    cfg = pod_config("cg", linux=pb.LinuxPodSandboxConfig(cgroup_parent=parent))
    pod_id = run_pod(crid, cfg)
    assert os.path.isdir(f"/sys/fs/cgroup/memory{parent}")
    stop_and_remove(crid, pod_id)
    assert not os.path.exists(f"/sys/fs/cgroup/memory{parent.rsplit('/', 1)[0]}")


def test_cgroup_parent_shared_by_pods(crid: CridProcess) -> None:
    top = f"/crid-e2e-{secrets.token_hex(4)}"
    ids = [
        run_pod(crid, pod_config(f"cg{i}", linux=pb.LinuxPodSandboxConfig(cgroup_parent=f"{top}/pod{i}")))
        for i in range(3)
    ]
    stop_and_remove(crid, ids[0])  # the pod that made the shared parent goes first
    assert os.path.isdir(f"/sys/fs/cgroup/memory{top}/pod1")
    for pod_id in ids[1:]:
        stop_and_remove(crid, pod_id)
    assert not os.path.exists(f"/sys/fs/cgroup/memory{top}")


# --- timeouts, crashes, restarts ------------------------------------------------------------


def test_retry_after_client_deadline_gets_the_same_pod(crid: CridProcess, network: Network) -> None:
    network.write("slowbridge")
    network.delay(2)
    cfg = pod_config("slow")
    with pytest.raises(grpc.RpcError) as err:
        run_pod(crid, cfg, timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    pod_id = run_pod(crid, cfg, timeout=30)  # same name, same config: the same sandbox, no name conflict
    assert run_pod(crid, cfg) == pod_id
    assert len(crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items) == 1
    stop_and_remove(crid, pod_id)


def _plugins_running(network: Network) -> list[int]:
    """Processes started as CNI plugins of this test's network (their environment says so)."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if str(network.bin_dir) in proc.environ().get("CNI_PATH", ""):
                found.append(proc.pid)
    return found


def test_sigkill_during_run_then_restart(crid: CridProcess, network: Network) -> None:
    before = run_pod(crid, pod_config("survivor"))
    old_status, _ = pod_status(crid, before)
    network.write("slowbridge")
    network.delay(3)

    def doomed_run() -> None:
        with pytest.raises(grpc.RpcError):
            run_pod(crid, pod_config("victim"))

    t = threading.Thread(target=doomed_run)
    t.start()
    time.sleep(1.0)  # the slow plugin is running now
    assert crid.proc is not None
    crid.proc.send_signal(signal.SIGKILL)
    crid.proc.wait()
    t.join()
    network.delay(0)
    assert _plugins_running(network), "precondition: the slow plugin outlives the SIGKILL, as it would anywhere"
    crid.start()
    assert _plugins_running(network) == [], "the restarted crid left the killed one's plugin running"
    listed = crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert [p.id for p in listed] == [before]
    status, _ = pod_status(crid, before)
    assert status == old_status
    time.sleep(3)  # let an orphaned plugin (if any survived crid) finish before counting IPs
    assert network.reservations() == [old_status.network.ip]
    stop_and_remove(crid, before)
    assert network.reservations() == []
    assert os.listdir(Path(crid.state) / "sandboxes") == []


def test_restart_reports_the_same(crid: CridProcess) -> None:
    a = run_pod(crid, pod_config("ra"))
    b = run_pod(crid, pod_config("rb"))
    crid.client.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=b))
    listed = crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    statuses = {i: pod_status(crid, i)[0] for i in (a, b)}
    assert crid.stop() == 0
    crid.start()
    assert crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items == listed
    for i in (a, b):
        assert pod_status(crid, i)[0] == statuses[i]
    stop_and_remove(crid, a)
    stop_and_remove(crid, b)


def test_sigterm_during_run_finishes_it(crid: CridProcess, network: Network) -> None:
    """A shutdown lets a RunPodSandbox in flight finish (within the grace) before the store closes."""
    network.write("slowbridge")
    network.delay(2)

    def interrupted_run() -> None:
        with pytest.raises(grpc.RpcError):
            run_pod(crid, pod_config("midterm"))

    t = threading.Thread(target=interrupted_run)
    t.start()
    time.sleep(1.0)  # the slow plugin is running
    assert crid.stop(signal.SIGTERM) == 0
    t.join()
    assert "closed database" not in crid.log_text()
    network.delay(0)
    crid.start()
    pods = crid.client.runtime.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert [(p.metadata.name, p.state) for p in pods] == [("midterm", pb.SANDBOX_READY)]
    status, _ = pod_status(crid, pods[0].id)
    assert network.reservations() == [status.network.ip]
    stop_and_remove(crid, pods[0].id)
    assert network.reservations() == []
