"""Pod config pieces that need no system: names, validation, bandwidth annotations."""

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.runtime.pods import bandwidth, reserved_name, validate


def test_reserved_name() -> None:
    meta = pb.PodSandboxMetadata(name="web", namespace="prod", uid="u-1", attempt=2)
    assert reserved_name(meta) == "web_prod_u-1_2"


def test_bandwidth_annotations() -> None:
    assert bandwidth({}) is None
    bw = bandwidth({"kubernetes.io/ingress-bandwidth": "10M", "kubernetes.io/egress-bandwidth": "1Gi"})
    assert bw is not None
    assert bw["ingressRate"] == 10_000_000 and bw["egressRate"] == 2**30
    assert bw["ingressBurst"] > 0
    with pytest.raises(InvalidArgument, match="ingress-bandwidth"):
        bandwidth({"kubernetes.io/ingress-bandwidth": "fast"})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="x", namespace="n")), "uid"),
        (
            pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(name="x", namespace="n", uid="u"),
                linux=pb.LinuxPodSandboxConfig(sysctls={"kernel.panic": "1"}),
            ),
            "not namespaced",
        ),
        (
            pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(name="x", namespace="n", uid="u"),
                linux=pb.LinuxPodSandboxConfig(
                    sysctls={"net.ipv4.ip_forward": "1"},
                    security_context=pb.LinuxSandboxSecurityContext(
                        namespace_options=pb.NamespaceOption(network=pb.NODE)
                    ),
                ),
            ),
            "host's",
        ),
    ],
)
def test_validate_refuses(config: pb.PodSandboxConfig, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        validate(config)
