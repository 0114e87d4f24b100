"""The whole spec: privileged, masked paths, namespaces, sysctls, annotations, root; and one real runc run when root."""

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import HOST
from cri.runtime.spec.build import DEFAULT_MASKED_PATHS, build_spec
from tests.unit.spec.helpers import build, cc, check_oci, make, pod, sec

# ---------------------------------------------------------------- privileged, masked paths


def test_privileged_needs_privileged_pod(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="no privileged container allowed in sandbox"):
        build(env, cc(linux=sec(privileged=True)))


def test_privileged(env: Path) -> None:
    config = cc(linux=sec(privileged=True, seccomp=pb.SecurityProfile(), masked_paths=["/proc/kcore"]))
    doc = build(env, config, sandbox=pod(privileged=True))
    linux = doc["linux"]
    assert "maskedPaths" not in linux and "readonlyPaths" not in linux and "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    paths = {d["path"] for d in linux["devices"]}
    assert "/dev/null" in paths and "/dev/console" not in paths
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/", "/dev/fd/")) for p in paths)
    null = next(d for d in linux["devices"] if d["path"] == "/dev/null")
    assert (null["type"], null["major"], null["minor"], null["fileMode"]) == ("c", 1, 3, 0o666)


def test_default_masked_and_readonly_paths(env: Path) -> None:
    linux = build(env)["linux"]
    assert linux["maskedPaths"] == list(DEFAULT_MASKED_PATHS)
    assert linux["readonlyPaths"] == ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
    assert {"/proc/kcore", "/proc/keys", "/sys/firmware", "/proc/timer_list"} <= set(linux["maskedPaths"])


def test_cri_masked_and_readonly_paths_exactly(env: Path) -> None:
    linux = build(env, cc(linux=sec(masked_paths=["/bin/ls"], readonly_paths=["/tmp"])))["linux"]
    assert linux["maskedPaths"] == ["/bin/ls"]
    assert linux["readonlyPaths"] == ["/tmp"]


# ---------------------------------------------------------------- namespaces


def ns_of(doc: dict[str, Any]) -> dict[str, str | None]:
    return {n["type"]: n.get("path") for n in doc["linux"]["namespaces"]}


def test_pod_namespaces_joined(env: Path) -> None:
    assert ns_of(build(env)) == {
        "mount": None,
        "network": "/run/ns/net",
        "ipc": "/run/ns/ipc",
        "uts": "/run/ns/uts",
        "pid": None,
    }


def test_host_namespaces_when_absent(env: Path) -> None:
    assert ns_of(build(env, namespaces={"ipc": "/run/ns/ipc"})) == {"mount": None, "ipc": "/run/ns/ipc", "pid": None}


def nsopts(**kw: Any) -> pb.LinuxContainerConfig:
    return sec(namespace_options=pb.NamespaceOption(**kw))


def test_pid_namespace_modes(env: Path) -> None:
    assert "pid" not in ns_of(build(env, cc(linux=nsopts(pid=pb.NODE)), pid_namespace="/proc/1/ns/pid"))
    assert ns_of(build(env, cc(linux=nsopts(pid=pb.CONTAINER)), pid_namespace="/proc/9/ns/pid"))["pid"] is None
    assert ns_of(build(env, cc(linux=nsopts(pid=pb.POD)), pid_namespace="/proc/9/ns/pid"))["pid"] == "/proc/9/ns/pid"
    assert (
        ns_of(build(env, cc(linux=nsopts(pid=pb.TARGET, target_id="x")), pid_namespace="/proc/7/ns/pid"))["pid"]
        == "/proc/7/ns/pid"
    )
    # a container left at POD in a host-PID pod
    host_pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"),
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=pb.NamespaceOption(pid=pb.NODE))
        ),
    )
    assert "pid" not in ns_of(build(env, cc(), sandbox=host_pod))
    with pytest.raises(InvalidArgument, match="TARGET"):
        build(env, cc(linux=nsopts(pid=pb.TARGET, target_id="x")))


def test_cgroup_namespace_only_on_v2_and_unprivileged(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "cgroup" not in ns_of(build(env))
    monkeypatch.setattr(HOST, "cgroup_v2", lambda: True)
    assert "cgroup" in ns_of(build(env))
    assert "cgroup" not in ns_of(build(env, cc(linux=sec(privileged=True)), sandbox=pod(privileged=True)))


MAP = [pb.IDMapping(container_id=0, host_id=100000, length=65536)]


def userns_opts(mode: Any = pb.POD, uids: list[pb.IDMapping] = MAP) -> pb.NamespaceOption:
    return pb.NamespaceOption(userns_options=pb.UserNamespace(mode=mode, uids=uids, gids=MAP))


def test_user_namespace_joined_with_its_maps(env: Path) -> None:
    pods_ns = {"user": "/run/ns/user", "net": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts"}
    sandbox = pod(namespace_options=userns_opts())
    doc = build(env, cc(linux=nsopts(userns_options=userns_opts().userns_options)), sandbox=sandbox, namespaces=pods_ns)
    assert ns_of(doc)["user"] == "/run/ns/user"
    expected = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    assert doc["linux"]["uidMappings"] == expected and doc["linux"]["gidMappings"] == expected
    # a container that does not repeat the pod's options is still in the pod's user namespace
    assert ns_of(build(env, sandbox=sandbox, namespaces=pods_ns))["user"] == "/run/ns/user"


def test_user_namespace_options_must_be_the_pods(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="differ from its pod's"):
        build(env, cc(linux=nsopts(userns_options=userns_opts().userns_options)))
    other = userns_opts(uids=[pb.IDMapping(container_id=0, host_id=200000, length=65536)])
    with pytest.raises(InvalidArgument, match="differ from its pod's"):
        build(env, cc(linux=nsopts(userns_options=other.userns_options)), sandbox=pod(namespace_options=userns_opts()))
    with pytest.raises(InvalidArgument, match="no user namespace of its own"):
        build(env, sandbox=pod(namespace_options=userns_opts()))
    doc = build(env, cc(linux=nsopts(userns_options=pb.UserNamespace(mode=pb.NODE))))
    assert "user" not in ns_of(doc) and "uidMappings" not in doc["linux"]


# ---------------------------------------------------------------- cgroups path


def test_cgroups_path(env: Path) -> None:
    assert build(env)["linux"]["cgroupsPath"] == "/kubepods/pod1/c1"
    assert "cgroupsPath" not in build(env, cgroups_path="")["linux"]


# ---------------------------------------------------------------- sysctls, annotations, root


def with_sysctls(sysctls: dict[str, str], **sc: Any) -> pb.PodSandboxConfig:
    p = pod(**sc)
    p.linux.sysctls.update(sysctls)
    return p


def test_sysctls(env: Path) -> None:
    sysctls = {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1", "net/ipv4/ip_forward": "1"}
    doc = build(env, sandbox=with_sysctls(sysctls))
    assert doc["linux"]["sysctl"] == {
        "net.ipv4.ip_unprivileged_port_start": "0",
        "kernel.shm_rmid_forced": "1",
        "net.ipv4.ip_forward": "1",
    }
    assert "sysctl" not in build(env)["linux"]
    # a slash-form key whose parts hold dots cannot be spelled for runc: the pod already set it
    doc = build(env, sandbox=with_sysctls({"net/ipv4/conf/eth0.100/forwarding": "1"}))
    assert "sysctl" not in doc["linux"]


def test_sysctls_need_the_pods_namespaces(env: Path) -> None:
    with pytest.raises(InvalidArgument, match="net"):
        build(env, sandbox=with_sysctls({"net.core.somaxconn": "1024"}), namespaces={"ipc": "/run/ns/ipc"})
    with pytest.raises(InvalidArgument, match="ipc"):
        build(env, sandbox=with_sysctls({"kernel.msgmax": "1"}), namespaces={"net": "/run/ns/net"})
    with pytest.raises(InvalidArgument, match="not namespaced"):
        build(env, sandbox=with_sysctls({"vm.swappiness": "1"}))


def test_annotations(env: Path) -> None:
    config = cc(annotations={"my": "note", "io.kubernetes.cri.container-type": "spoofed"})
    ann = build(env, config)["annotations"]
    assert ann == {
        "my": "note",
        "io.kubernetes.cri.container-type": "container",
        "io.kubernetes.cri.container-name": "app",
        "io.kubernetes.cri.sandbox-id": "sb1",
        "io.kubernetes.cri.sandbox-name": "web",
        "io.kubernetes.cri.sandbox-namespace": "default",
        "io.kubernetes.cri.sandbox-uid": "pod-uid",
        "io.kubernetes.cri.image-name": "docker.io/library/busybox:latest",
    }
    assert (
        build(env, config, image_name="busybox@sha256:x")["annotations"]["io.kubernetes.cri.image-name"]
        == "busybox@sha256:x"
    )


def test_root_and_version(env: Path) -> None:
    doc = build(env)
    assert doc["root"] == {"path": str(env / "rootfs"), "readonly": False}
    assert doc["ociVersion"].startswith("1.")


# ---------------------------------------------------------------- runc accepts it (root only)


def _runc_run(bundle: Path, cid: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["runc", "--root", str(bundle / "state"), "run", "--bundle", str(bundle), cid],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="runc needs root")
@pytest.mark.skipif(shutil.which("runc") is None or not os.path.exists("/bin/busybox"), reason="needs runc and busybox")
def test_runc_runs_the_spec(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the real host: cgroup mode, capabilities crid holds
    rootfs = env / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "tmp"):
        (rootfs / d).mkdir(exist_ok=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for tool in ("sh", "ls", "id", "cat", "echo", "sleep", "true", "grep", "hostname", "unshare", "kill"):
        (rootfs / "bin" / tool).symlink_to("busybox")
    with open("/proc/self/oom_score_adj") as f:
        own_adj = int(f.read())
    script = (
        "id; grep -E '^(CapEff|Seccomp):' /proc/self/status; "
        "hostname blocked 2>/dev/null && echo HOSTNAME-CHANGED || echo hostname-denied; "
        "unshare -n true 2>/dev/null && echo UNSHARE-OK || echo unshare-denied; "
        "trap 'echo trapped' USR1; kill -USR1 $$; ls /etc; cat /etc/hostname"
    )
    config = cc(
        command=["sh", "-c", script],
        linux=pb.LinuxContainerConfig(
            resources=pb.LinuxContainerResources(memory_limit_in_bytes=64 << 20, cpu_shares=256),
            security_context=pb.LinuxContainerSecurityContext(
                seccomp=pb.SecurityProfile(), run_as_user=pb.Int64Value(value=0)
            ),
        ),
    )
    cid = f"crid-spec-test-{uuid.uuid4().hex[:8]}"
    doc = build_spec(
        make(
            env,
            config,
            image={"config": {"Env": ["PATH=/bin"]}},
            namespaces={},
            pid_namespace="",
            cgroups_path=f"/{cid}",
            min_oom_score_adj=own_adj,
        )
    )
    check_oci(doc)
    # test-only: a private UTS namespace so that a failing seccomp filter could not rename the host
    doc["linux"]["namespaces"].append({"type": "uts"})
    (env / "config.json").write_text(json.dumps(doc))
    try:
        run = _runc_run(env, cid)
        assert run.returncode == 0, run.stderr
        out = run.stdout
        assert "uid=0(root) gid=0(root)" in out
        assert "CapEff:\t00000000a80425fb" in out  # exactly the 14 default capabilities
        assert "Seccomp:\t2" in out
        assert "hostname-denied" in out and "unshare-denied" in out
        assert "trapped" in out and "passwd" in out and "hostname\n" in out
    finally:
        subprocess.run(
            ["runc", "--root", str(env / "state"), "delete", "--force", cid], capture_output=True, timeout=30
        )
        for hierarchy in os.listdir("/sys/fs/cgroup"):
            path = os.path.join("/sys/fs/cgroup", hierarchy, cid)
            if os.path.isdir(path):
                os.rmdir(path)
        if os.path.isdir(f"/sys/fs/cgroup/{cid}"):
            os.rmdir(f"/sys/fs/cgroup/{cid}")
