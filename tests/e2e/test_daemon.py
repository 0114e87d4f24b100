"""The daemon itself: the CRI basics over real gRPC, its socket and locks,
signals, metrics and configuration errors."""

import os
import signal
import socket
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

import cri
from cri.api.v1 import api_pb2 as pb
from tests.e2e.conftest import Daemons
from tests.e2e.harness import CridProcess, run_crid


def test_version(crid: CridProcess) -> None:
    v = crid.client.runtime.Version(pb.VersionRequest(version="0.1.0"))
    assert (v.version, v.runtime_name, v.runtime_version, v.runtime_api_version) == (
        "0.1.0",
        "crid",
        cri.__version__,
        "v1",
    )


def _conditions(status: pb.StatusResponse) -> dict[str, pb.RuntimeCondition]:
    return {c.type: c for c in status.status.conditions}


def test_status(crid: CridProcess) -> None:
    resp = crid.client.runtime.Status(pb.StatusRequest())
    conds = _conditions(resp)
    assert conds["RuntimeReady"].status, conds["RuntimeReady"]
    assert not conds["NetworkReady"].status
    assert conds["NetworkReady"].reason == "NetworkPluginNotReady"
    assert conds["NetworkReady"].message
    assert dict(resp.info) == {}
    handlers = {h.name: h for h in resp.runtime_handlers}
    assert set(handlers) == {"runc", "crun", ""}
    assert resp.features.supplemental_groups_policy  # Merge and Strict both work (test_container_security.py)
    for h in handlers.values():  # nothing claimed that crid does not do
        assert not h.features.user_namespaces
    # recursive read-only mounts: only where the runtime says it can (runc >= 1.1) and the kernel has mount_setattr
    runc = subprocess.run(["/usr/sbin/runc", "features"], capture_output=True, text=True)
    kernel = tuple(int(p) for p in os.uname().release.split(".")[:2])
    expected = runc.returncode == 0 and '"rro"' in runc.stdout and kernel >= (5, 12)
    assert handlers["runc"].features.recursive_read_only_mounts == expected
    assert handlers[""].features.recursive_read_only_mounts == expected
    assert not handlers["crun"].features.recursive_read_only_mounts  # Debian's crun 1.8 cannot say


def test_status_verbose_shows_effective_config(crid: CridProcess) -> None:
    import json

    resp = crid.client.runtime.Status(pb.StatusRequest(verbose=True))
    cfg = json.loads(resp.info["config"])
    assert cfg["grpc"]["socket"] == crid.socket
    assert cfg["root_dir"] == crid.root
    assert cfg["runtime"]["handlers"]["runc"]["binary"] == "/usr/sbin/runc"
    apparmor = json.loads(resp.info["apparmor"])
    assert apparmor["supported"] is False and apparmor["kernelEnabled"] == os.path.exists(
        "/sys/kernel/security/apparmor"
    )


def test_update_runtime_config(crid: CridProcess) -> None:
    cfg = pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="10.244.1.0/24"))
    crid.client.runtime.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(runtime_config=cfg))
    bad = pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr="not-a-cidr"))
    with pytest.raises(grpc.RpcError) as err:
        crid.client.runtime.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(runtime_config=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_runtime_config(crid: CridProcess) -> None:
    resp = crid.client.runtime.RuntimeConfig(pb.RuntimeConfigRequest())
    assert resp.linux.cgroup_driver == pb.CGROUPFS


@pytest.mark.parametrize(
    ("service", "method", "request_msg"),
    [
        ("runtime", "CheckpointPod", pb.CheckpointPodRequest()),
        ("runtime", "RestorePod", pb.RestorePodRequest()),
    ],
)
def test_unimplemented_rpc_names_itself(crid: CridProcess, service: str, method: str, request_msg: object) -> None:
    stub = getattr(crid.client, service)
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request_msg)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert method in err.value.details()


def test_socket_and_directory_modes(crid: CridProcess) -> None:
    st = os.stat(crid.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert stat.S_IMODE(os.stat(os.path.dirname(crid.socket)).st_mode) == 0o711
    assert stat.S_IMODE(os.stat(crid.root).st_mode) == 0o711


def test_second_daemon_on_same_socket_refuses(daemons: Daemons) -> None:
    first = daemons.start("a")
    second = daemons.new("b", grpc={"socket": first.socket})
    with pytest.raises(RuntimeError, match="exited with 1"):
        second.start()
    assert "is serving" in second.log_text() and first.socket in second.log_text()
    assert first.client.runtime.Version(pb.VersionRequest()).runtime_name == "crid"
    assert first.stop() == 0


def test_second_daemon_on_same_root_refuses(daemons: Daemons) -> None:
    first = daemons.start("a")
    second = daemons.new("b", root_dir=first.root)
    with pytest.raises(RuntimeError, match="exited with 1"):
        second.start()
    assert "root directory" in second.log_text()
    assert first.client.runtime.Version(pb.VersionRequest()).runtime_name == "crid"


def test_stale_socket_is_replaced(daemons: Daemons) -> None:
    d = daemons.new()
    os.makedirs(os.path.dirname(d.socket), exist_ok=True)
    with socket.socket(socket.AF_UNIX) as s:  # bound, never listening: what a crash leaves
        s.bind(d.socket)
    d.start()
    assert d.client.runtime.Version(pb.VersionRequest()).runtime_name == "crid"


def test_live_foreign_socket_is_not_replaced(daemons: Daemons) -> None:
    d = daemons.new()
    os.makedirs(os.path.dirname(d.socket), exist_ok=True)
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(d.socket)
        s.listen()
        with pytest.raises(RuntimeError, match="exited with 1"):
            d.start()
        assert "in use by another live process" in d.log_text()
        assert os.path.exists(d.socket)


def test_sigterm_exits_zero_promptly(daemons: Daemons) -> None:
    d = daemons.start()
    d.client.runtime.Version(pb.VersionRequest())
    t0 = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - t0 < 5
    assert d.log_records("crid stopped")
    assert not os.path.exists(d.socket)


def test_sigint_exits_zero(daemons: Daemons) -> None:
    d = daemons.start()
    assert d.stop(signal.SIGINT) == 0


def _scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(name + "{"):
            label_text = line[len(name) + 1 : line.index("}")]
            if all(part in label_text.split(",") for part in want.split(",")):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_version_calls(crid: CridProcess) -> None:
    labels = {"operation": "Version", "code": "OK"}
    before = _sample(_scrape(crid.metrics_address), "crid_operations_total", labels)
    for _ in range(3):
        crid.client.runtime.Version(pb.VersionRequest())
    text = _scrape(crid.metrics_address)
    assert _sample(text, "crid_operations_total", labels) == before + 3
    assert "crid_build_info{" in text and f'version="{cri.__version__}"' in text
    assert _sample(text, "crid_operation_duration_seconds_count", {"operation": "Version"}) >= 3
    assert 'crid_operations_in_flight{operation="Version"} 0.0' in text
    assert "process_resident_memory_bytes" in text
    assert "_created" not in text


def test_metrics_count_error_codes(crid: CridProcess) -> None:
    labels = {"operation": "ContainerStatus", "code": "NOT_FOUND"}
    before = _sample(_scrape(crid.metrics_address), "crid_operations_total", labels)
    with pytest.raises(grpc.RpcError):
        crid.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id="nonexistent"))
    assert _sample(_scrape(crid.metrics_address), "crid_operations_total", labels) == before + 1


def test_metrics_can_be_disabled(daemons: Daemons) -> None:
    d = daemons.start(metrics={"enabled": False})
    assert d.metrics_address == "disabled"


def test_runtime_not_ready_without_runtime_binary(daemons: Daemons) -> None:
    d = daemons.start(runtime={"handlers": {"runc": {"binary": "/nonexistent/runc"}}})
    cond = _conditions(d.client.runtime.Status(pb.StatusRequest()))["RuntimeReady"]
    assert not cond.status
    assert cond.reason == "OCIRuntimeNotFound"
    assert "/nonexistent/runc" in cond.message


def test_unknown_config_key_fails_startup(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'root_dir = "{tmp_path}/root"\n[grpc]\nsocket = "{tmp_path}/s.sock"\nsockets = 1\n')
    result = run_crid(["serve", "--config", str(cfg)])
    assert result.returncode != 0
    assert "grpc.sockets" in result.stderr and "unknown key" in result.stderr
    assert str(cfg) in result.stderr
    assert not os.path.exists(tmp_path / "s.sock")


def test_bad_config_value_fails_startup(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[metrics]\naddress = "nowhere"\n')
    result = run_crid(["serve", "--config", str(cfg)])
    assert result.returncode != 0
    assert "metrics.address" in result.stderr


def test_cli_flags_override_config(daemons: Daemons) -> None:
    d = daemons.new()
    alt_socket = str(d.dir / "alt.sock")
    d.command = lambda: [  # type: ignore[method-assign]
        *CridProcess.command(d),
        "--socket",
        alt_socket,
        "--log-level",
        "info",
    ]
    d.start()
    assert os.path.exists(alt_socket) and not os.path.exists(d.socket)
    assert not d.log_records("rpc")  # info level: no per-RPC debug lines


def test_leak_check_catches_a_planted_leftover(daemons: Daemons) -> None:
    """The module leak check also fails on files of pods and containers that crid no longer has."""
    from tests.e2e import harness

    d = daemons.start()
    gone = "ab" * 32
    planted = [Path(d.state) / "attach" / gone, Path(d.root) / "containers" / gone / "upper"]
    for p in planted:
        p.mkdir(parents=True)
    (Path(d.state) / "exits" / f"{gone}").parent.mkdir(exist_ok=True)
    (Path(d.state) / "exits" / f"{gone}").write_text("0")
    before = len(harness.LEFTOVERS)
    d.stop()
    found = harness.LEFTOVERS[before:]
    del harness.LEFTOVERS[before:]  # planted on purpose: not this module's leak
    assert sorted(f.split(": ", 1)[1] for f in found) == sorted(
        [str(planted[0]), str(planted[1].parent), str(Path(d.state) / "exits" / gone)]
    )
