"""crid serve makes every thread allocate from glibc's main arena, so that what worker
threads freed goes back to the system at malloc_trim (a thread arena keeps its top)."""

import platform
import subprocess
import sys

import pytest

PROBE = """
import ctypes, sys, threading
from cri.server.cli import _one_malloc_arena
if sys.argv[1] == "crid":
    _one_malloc_arena()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]

def rss_mib():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024

def pull_like():
    libc.free(libc.malloc(16 << 20))  # a freed mmapped chunk raises glibc's mmap and trim thresholds
    blocks = [libc.malloc(1 << 20) for _ in range(20)]  # then 20 MiB of buffers come from the arena
    for p in blocks:
        ctypes.memset(p, 1, 1 << 20)
    for p in blocks:
        libc.free(p)

before = rss_mib()
for _ in range(3):
    t = threading.Thread(target=pull_like)
    t.start()
    t.join()
libc.malloc_trim(0)
print(rss_mib() - before)
"""


def _kept_mib(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")
def test_worker_thread_buffers_are_given_back() -> None:
    assert _kept_mib("default") >= 15  # the probe shows the problem: an arena per thread keeps them
    assert _kept_mib("crid") <= 2
