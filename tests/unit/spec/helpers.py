"""Requests to build specs from, and checks of the specs built."""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from cri.api.v1 import api_pb2 as pb
from cri.host import CAPABILITIES
from cri.runtime.spec.build import SpecInputs, build_spec

NAMESPACE_TYPES = {"pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time"}


def cc(**kw: Any) -> pb.ContainerConfig:
    kw.setdefault("metadata", pb.ContainerMetadata(name="app"))
    kw.setdefault("image", pb.ImageSpec(image="docker.io/library/busybox:latest"))
    return pb.ContainerConfig(**kw)


def sec(**kw: Any) -> pb.LinuxContainerConfig:
    return pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(**kw))


def pod(**sc: Any) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name="web", uid="pod-uid", namespace="default"),
        hostname="web-0",
        linux=pb.LinuxPodSandboxConfig(security_context=pb.LinuxSandboxSecurityContext(**sc)),
    )


def make(
    env: Path,
    config: pb.ContainerConfig | None = None,
    *,
    sandbox: pb.PodSandboxConfig | None = None,
    image: dict[str, Any] | None = None,
    **kw: Any,
) -> SpecInputs:
    args: dict[str, Any] = {
        "container_id": "c1",
        "config": config if config is not None else cc(),
        "sandbox_config": sandbox if sandbox is not None else pod(),
        "image_config": image if image is not None else {"config": {"Cmd": ["sh"], "Env": ["PATH=/bin:/usr/bin"]}},
        "rootfs": str(env / "rootfs"),
        "namespaces": {"net": "/run/ns/net", "ipc": "/run/ns/ipc", "uts": "/run/ns/uts"},
        "pid_namespace": "",
        "sandbox_dir": str(env / "pod"),
        "shm": str(env / "shm"),
        "cgroups_path": "/kubepods/pod1/c1",
        "min_oom_score_adj": -999,
        "hostname": "web-0",
        "sandbox_id": "sb1",
    }
    args.update(kw)
    return SpecInputs(**args)


def build(env: Path, config: pb.ContainerConfig | None = None, **kw: Any) -> dict[str, Any]:
    doc = build_spec(make(env, config, **kw))
    check_oci(doc)
    return cast(dict[str, Any], doc)  # the tests look into it as JSON


def check_oci(doc: Mapping[str, Any]) -> None:
    """The runtime-spec's shape (config.md, config-linux.md): required keys and their types."""
    json.loads(json.dumps(doc))
    assert isinstance(doc["ociVersion"], str)
    assert isinstance(doc["root"]["path"], str) and isinstance(doc["root"].get("readonly", False), bool)
    p = doc["process"]
    assert isinstance(p["terminal"], bool) and isinstance(p["noNewPrivileges"], bool)
    assert isinstance(p["user"]["uid"], int) and isinstance(p["user"]["gid"], int)
    assert all(isinstance(g, int) for g in p["user"].get("additionalGids", []))
    assert p["args"] and all(isinstance(a, str) for a in p["args"])
    assert all(isinstance(e, str) and "=" in e for e in p["env"])
    assert p["cwd"].startswith("/")
    assert isinstance(p.get("oomScoreAdj", 0), int)
    for kind, caps in p["capabilities"].items():
        assert kind in {"bounding", "effective", "permitted", "inheritable", "ambient"}
        assert all(c in CAPABILITIES for c in caps)
    for m in doc["mounts"]:
        assert m["destination"].startswith("/")
        assert isinstance(m.get("type", ""), str) and isinstance(m["source"], str)  # a CDI mount may omit them
        assert all(isinstance(o, str) for o in m.get("options", []))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in doc["annotations"].items())
    linux = doc["linux"]
    types = [n["type"] for n in linux["namespaces"]]
    assert set(types) <= NAMESPACE_TYPES and len(types) == len(set(types))
    assert all(isinstance(n.get("path", ""), str) for n in linux["namespaces"])
    for rule in linux["resources"]["devices"]:
        assert isinstance(rule["allow"], bool) and set(rule.get("access", "")) <= set("rwm")
    for dev in linux.get("devices", []):
        assert {"path", "type", "major", "minor"} <= set(dev) and dev["type"] in ("c", "b", "u", "p")
    assert all(isinstance(x, str) for x in linux.get("maskedPaths", []) + linux.get("readonlyPaths", []))
    if "seccomp" in linux:
        assert isinstance(linux["seccomp"]["defaultAction"], str)
        assert all(r["names"] and isinstance(r["action"], str) for r in linux["seccomp"]["syscalls"])
    assert all(isinstance(v, str) for v in linux.get("sysctl", {}).values())
    assert "hostname" not in doc


def mount_at(doc: dict[str, Any], dst: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [m for m in doc["mounts"] if m["destination"] == dst]
    assert len(found) == 1, destinations(doc)
    return found[0]


def destinations(doc: dict[str, Any]) -> list[str]:
    return [m["destination"] for m in doc["mounts"]]
