"""The daemon starts without the libraries only some calls need (aiohttp for
pulls, pyroute2 for pod network stats, the decompressors its pull processes
use): they are most of its idle memory."""

import subprocess
import sys


def test_daemon_import_leaves_pull_and_netlink_libraries_unloaded() -> None:
    code = (
        "import sys, cri.server.cli, cri.server.daemon\n"
        "lazy = ('aiohttp', 'pyroute2', 'cri.images.registry', 'isal', 'zstandard')\n"
        "print(' '.join(m for m in lazy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == ""
