"""Request validation at the servicer edge: NUL bytes, sizes, hostnames,
sysctl names, unknown enum values; every message names the field and stays short."""

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument, quote
from cri.server.validate import MAX_ID, validate


def refused(request: object, *words: str) -> str:
    with pytest.raises(InvalidArgument) as err:
        validate(request)  # type: ignore[arg-type]
    message = str(err.value)
    assert len(message) < 400, message
    for w in words:
        assert w in message, message
    return message


def pod(**kw: object) -> pb.RunPodSandboxRequest:
    meta = pb.PodSandboxMetadata(name="p", namespace="n", uid="u")
    return pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(metadata=meta, **kw))  # type: ignore[arg-type]


def test_a_good_request_passes() -> None:
    validate(pod(hostname="web-0.example", linux=pb.LinuxPodSandboxConfig(sysctls={"net.ipv4.ip_forward": "1"})))
    validate(pb.ContainerStatusRequest(container_id="ab" * 32))
    validate(pb.ListContainersRequest())


def test_nul_bytes_anywhere() -> None:
    refused(pod(hostname="a\x00b"), "config.hostname", "NUL")
    refused(pod(annotations={"k": "v\x00"}), "config.annotations['k']", "NUL")
    cfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="c"), args=["ok", "bad\x00"])
    refused(pb.CreateContainerRequest(pod_sandbox_id="p", config=cfg), "config.args[1]", "NUL")


def test_sizes_by_field_kind() -> None:
    msg = refused(pb.ContainerStatusRequest(container_id="x" * 70_000), "container_id", "70000 characters")
    assert "(70000 characters)" in msg  # the quote is cut, the message says how long the value was
    validate(pb.ContainerStatusRequest(container_id="x" * MAX_ID))
    refused(pod(log_directory="/" + "d" * 5000), "config.log_directory")
    meta = pb.PodSandboxMetadata(name="n" * 300, namespace="n", uid="u")
    refused(pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(metadata=meta)), "config.metadata.name")


def test_hostnames_and_sysctls() -> None:
    refused(pod(hostname="a" * 65), "longer than 64 bytes")
    refused(pod(hostname="-bad"), "not a valid hostname")
    refused(pod(hostname="has space"), "not a valid hostname")
    refused(pod(linux=pb.LinuxPodSandboxConfig(sysctls={"../../x": "1"})), "not a sysctl name")


def test_unknown_enum_values() -> None:
    opts = pb.NamespaceOption(network=99)  # type: ignore[arg-type]
    ctx = pb.LinuxSandboxSecurityContext(namespace_options=opts)
    refused(pod(linux=pb.LinuxPodSandboxConfig(security_context=ctx)), "namespace_options.network", "99", "NODE")


def test_quote_cuts_and_escapes() -> None:
    assert quote("abc") == "'abc'"
    assert quote("a\x00b") == "'a\\x00b'"
    long = quote("y" * 1000)
    assert long.startswith("'yyy") and long.endswith("… (1000 characters)") and len(long) < 160
