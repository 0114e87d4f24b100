"""The daemon starts without the libraries only some calls need (pyroute2 for pod
network stats, the decompressors its pull processes use; the pull's own modules, its
registry client on h11 and tarfile until the first pull; the streaming server's HTTP,
WebSocket and SPDY until its first connection) and never loads those it does without
(aiohttp: its registry client is on h11; the generated gRPC stubs, which only the
client uses): they would be most of its idle memory."""

import subprocess
import sys


def test_daemon_import_leaves_pull_and_netlink_libraries_unloaded() -> None:
    code = (
        "import sys, cri.server.cli, cri.server.daemon\n"
        "lazy = ('aiohttp', 'pyroute2', 'isal', 'zstandard', 'cri.api.v1.api_pb2_grpc', 'h11', 'wsproto',\n"
        "    'tarfile', 'cri.images.pull', 'cri.server.streaming_sessions', 'cri.streaming.spdy_session')\n"
        "print(' '.join(m for m in lazy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == ""


def test_validating_a_request_does_not_load_descriptor_protos() -> None:
    """descriptor_pb2 (0.5 MiB) is what reading a field's options imports: the validator tells a map
    by its value, and leaves it unloaded."""
    code = (
        "import sys\n"
        "from cri.api.v1 import api_pb2 as pb\n"
        "from cri.server.validate import validate\n"
        "validate(pb.RunPodSandboxRequest(config=pb.PodSandboxConfig(labels={'a': 'b'}, annotations={'c': 'd'},\n"
        "    linux=pb.LinuxPodSandboxConfig(sysctls={'net.core.somaxconn': '1024'}))))\n"
        "print('google.protobuf.descriptor_pb2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "False"
