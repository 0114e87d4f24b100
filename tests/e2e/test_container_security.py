"""Containers' security and mounts end to end: users and groups, a read-only rootfs, capabilities,
privileged, masked paths, no_new_privs, seccomp, bind mounts and their propagation, what of crid
reaches the container (fds, the runtime's binary). Each test checks the effect inside the container."""

import json
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest

from cri.api.v1 import api_pb2 as pb
from tests.e2e.container_pod import CAP_NET_ADMIN, Pod, cap_eff, env, pod, sc
from tests.e2e.harness import CridProcess
from tests.support.cni_net import Network

__all__ = ["env", "pod"]  # the fixtures: one daemon per module, a pod per test


def test_run_as_user_and_username(pod: Pod) -> None:
    code, out = pod.output(
        "uid",
        ["sh", "-c", "id; ls / > /dev/null && echo root-readable"],
        linux=sc(run_as_user=pb.Int64Value(value=1000)),
    )
    assert code == 0 and out.startswith("uid=1000(alice) gid=1000(alice)") and "root-readable" in out
    code, out = pod.output("uname", ["id", "-un"], linux=sc(run_as_username="alice"))
    assert out.strip() == "alice"
    with pytest.raises(grpc.RpcError) as err:
        pod.create("nouser", ["id"], linux=sc(run_as_username="mallory"))
    assert "mallory" in err.value.details()


def test_supplemental_groups_merge_and_strict(pod: Pod) -> None:
    user = pb.Int64Value(value=1000)
    _, merged = pod.output("merge", ["id", "-G"], linux=sc(run_as_user=user, supplemental_groups=[70]))
    assert set(merged.split()) == {"1000", "50", "60", "70"}
    strict = sc(
        run_as_user=user, supplemental_groups=[70], supplemental_groups_policy=pb.SupplementalGroupsPolicy.Strict
    )
    _, only = pod.output("strict", ["id", "-G"], linux=strict)
    assert set(only.split()) == {"1000", "70"}


def test_readonly_rootfs(pod: Pod) -> None:
    code, out = pod.output("ro", ["sh", "-c", "touch /newfile && echo wrote"], linux=sc(readonly_rootfs=True))
    assert code != 0 and "Read-only file system" in out


def test_capabilities(pod: Pod) -> None:
    _, out = pod.output(
        "noCaps".lower(), ["cat", "/proc/self/status"], linux=sc(capabilities=pb.Capability(drop_capabilities=["ALL"]))
    )
    assert cap_eff(out) == 0
    _, out = pod.output(
        "netadmin", ["cat", "/proc/self/status"], linux=sc(capabilities=pb.Capability(add_capabilities=["NET_ADMIN"]))
    )
    assert cap_eff(out) & (1 << CAP_NET_ADMIN)
    _, default = pod.output("defcaps", ["cat", "/proc/self/status"])
    assert not cap_eff(default) & (1 << CAP_NET_ADMIN) and bin(cap_eff(default)).count("1") == 14


def test_privileged_sees_host_devices(env: tuple[CridProcess, str, Network]) -> None:
    d, image, _ = env
    # a privileged container needs a privileged pod, as kubelet and containerd require
    pod = Pod(d, image, "privpod", security_context=pb.LinuxSandboxSecurityContext(privileged=True))
    try:
        host_devices = len(os.listdir("/dev"))
        _, plain = pod.output("plain", ["ls", "/dev"])
        _, priv = pod.output("priv", ["ls", "/dev"], linux=sc(privileged=True))
        assert len(priv.split()) > len(plain.split())
        assert len(priv.split()) >= host_devices // 2
        _, mounts = pod.output("privmnt", ["cat", "/proc/self/mountinfo"], linux=sc(privileged=True))
        assert " /proc/keys " not in mounts  # nothing masked
    finally:
        pod.remove()


def test_masked_path(pod: Pod) -> None:
    _, out = pod.output("masked", ["sh", "-c", "grep -c ' /proc/keys ' /proc/self/mountinfo; cat /proc/keys | wc -c"])
    assert out.split() == ["1", "0"]  # /dev/null over it: present, empty


def test_no_new_privs(pod: Pod) -> None:
    _, out = pod.output("nnp", ["grep", "NoNewPrivs", "/proc/self/status"], linux=sc(no_new_privs=True))
    assert out.split()[-1] == "1"


def test_seccomp_runtime_default_vs_unconfined(pod: Pod) -> None:
    # unshare(CLONE_NEWUSER) needs no capability, but the default profile refuses it without CAP_SYS_ADMIN
    default = sc(seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))
    code, out = pod.output("sdef", ["sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true"], linux=default)
    assert "Seccomp:\t2" in out and code != 0
    unconfined = sc(seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined))
    code, out = pod.output("sunc", ["sh", "-c", "grep Seccomp: /proc/self/status; unshare -U true"], linux=unconfined)
    assert "Seccomp:\t0" in out and code == 0


def test_seccomp_localhost_profile(pod: Pod, tmp_path: Path) -> None:
    profile = tmp_path / "no-sethostname.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["sethostname"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
    }))  # fmt: skip
    caps = pb.Capability(add_capabilities=["SYS_ADMIN"])
    local = sc(
        capabilities=caps,
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(profile)),
    )
    code, out = pod.output("sloc", ["hostname", "blocked"], linux=local)
    assert code != 0 and "not permitted" in out
    code, _ = pod.output("sallow", ["hostname", "allowed"], linux=sc(capabilities=caps))
    assert code == 0
    missing = sc(
        seccomp=pb.SecurityProfile(profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(tmp_path / "none.json"))
    )
    with pytest.raises(grpc.RpcError) as err:
        pod.create("smissing", ["true"], linux=missing)
    assert "none.json" in err.value.details()


def test_bind_mounts_and_propagation(pod: Pod, tmp_path: Path) -> None:
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "data").write_text("ro-data")
    # rslave/rshared need a shared source mount, as on a systemd host
    for d in (rw, ro):
        subprocess.run(["mount", "--bind", str(d), str(d)], check=True)
        subprocess.run(["mount", "--make-rshared", str(d)], check=True)
    try:
        _propagation_cases(pod, rw, ro)
    finally:
        for d in (rw, ro):
            subprocess.run(["umount", "-l", str(d)], check=True)


def _propagation_cases(pod: Pod, rw: Path, ro: Path) -> None:
    for prop in (pb.PROPAGATION_PRIVATE, pb.PROPAGATION_HOST_TO_CONTAINER, pb.PROPAGATION_BIDIRECTIONAL):
        name = f"mnt{prop}"
        code, out = pod.output(
            name,
            ["sh", "-c", f"echo {prop} > /rw/from-{prop}; cat /ro/data; touch /ro/x || echo ro-refused"],
            mounts=[
                pb.Mount(container_path="/rw", host_path=str(rw), propagation=prop),
                pb.Mount(container_path="/ro", host_path=str(ro), readonly=True, propagation=prop),
            ],
        )
        assert code == 0, out
        assert "ro-data" in out and "ro-refused" in out
        assert (rw / f"from-{prop}").read_text().strip() == str(prop)


def test_recursive_read_only_mount(pod: Pod, tmp_path: Path) -> None:
    src = tmp_path / "rro"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(src / "sub")], check=True)
    try:
        rro = pb.Mount(container_path="/data", host_path=str(src), readonly=True, recursive_read_only=True)
        _, out = pod.output("rro", ["sh", "-c", "touch /data/sub/x || echo sub-refused"], mounts=[rro])
        assert "sub-refused" in out
        plain = pb.Mount(container_path="/data", host_path=str(src), readonly=True)
        _, out = pod.output("ro", ["sh", "-c", "touch /data/sub/x && echo sub-written"], mounts=[plain])
        assert "sub-written" in out  # a plain read-only bind leaves submounts writable: the difference rro makes
        with pytest.raises(grpc.RpcError) as err:
            pod.create(
                "rrorw", ["true"], mounts=[pb.Mount(container_path="/d", host_path=str(src), recursive_read_only=True)]
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)


@pytest.mark.parametrize(
    ("propagation", "visible"),
    [(pb.PROPAGATION_PRIVATE, False), (pb.PROPAGATION_HOST_TO_CONTAINER, True), (pb.PROPAGATION_BIDIRECTIONAL, True)],
)
def test_mount_propagation_from_the_host(pod: Pod, tmp_path: Path, propagation: Any, visible: bool) -> None:
    src = tmp_path / "prop"
    src.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    subprocess.run(["mount", "--make-rshared", str(src)], check=True)
    sub = src / "later"
    sub.mkdir()
    try:
        cid = pod.run(
            "watch",
            ["sleep", "600"],
            mounts=[pb.Mount(container_path="/mnt", host_path=str(src), propagation=propagation)],
        )
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(sub)], check=True)  # after the container started
        (sub / "marker").write_text("x")
        seen = pod.exec(cid, ["ls", "/mnt/later"]).stdout.decode().split()
        assert ("marker" in seen) == visible
    finally:
        subprocess.run(["umount", "-l", str(sub)], check=False)
        subprocess.run(["umount", "-l", str(src)], check=True)


def test_no_fd_of_crid_reaches_the_container(pod: Pod) -> None:
    """The runtime is handed a memfd at fd 3 (its log, an exec's process file): neither the
    container's process nor an exec'd command may inherit it, or any other fd of crid's."""
    cid = pod.run("fds", ["sleep", "600"])
    info = pod.d.client.runtime.ContainerStatus(pb.ContainerStatusRequest(container_id=cid, verbose=True)).info
    pid = int(json.loads(info["info"])["pid"])
    assert sorted(os.listdir(f"/proc/{pid}/fd"), key=int) == ["0", "1", "2"]
    r = pod.exec(cid, ["sh", "-c", "ls /proc/$$/fd; true"])  # the shell's own fds, not ls's
    assert (r.exit_code, r.stdout.split()) == (0, [b"0", b"1", b"2"]), r.stderr


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def test_the_runtime_runs_from_a_sealed_copy(pod: Pod) -> None:
    """runc (under conmon, and for exec) runs from crid's sealed memfd copy, which spares it its
    own bind mount of the binary at each create and exec (cri/runtime/sealed_binary.py)."""
    cid = pod.run("sealed", ["sleep", "600"])
    assert pod.d.proc is not None
    crid = psutil.Process(pod.d.proc.pid)
    conmon = next(p for p in psutil.process_iter(["cmdline"]) if cid in (p.info["cmdline"] or [])[:8])
    runtime = conmon.info["cmdline"][conmon.info["cmdline"].index("-r") + 1]
    assert runtime.startswith(f"/proc/{crid.pid}/fd/") and "memfd:crid:runc" in os.readlink(runtime)
    with ThreadPoolExecutor(1) as pool:
        probe = pool.submit(pod.exec, cid, ["sleep", "2"])
        deadline = time.monotonic() + 10
        exes: set[str] = set()
        while not probe.done() and time.monotonic() < deadline:
            exes |= {_exe(c.pid) for c in crid.children() if "exec" in c.cmdline()[:4]}
            time.sleep(0.05)
        assert probe.result().exit_code == 0
    assert any(e.startswith("/memfd:crid:runc") for e in exes), exes
