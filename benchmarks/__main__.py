"""``python -m benchmarks``: measure crid's CRI round trip.

The side-by-side harness against containerd grows here (issue 6); for now it
starts one crid daemon and reports the latency of the Version RPC.
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from cri.api.v1 import api_pb2 as pb
from tests.e2e.harness import CridProcess


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--count", type=int, default=2000, help="calls per workload")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="crid-bench-", dir="/tmp") as tmp:
        daemon = CridProcess(Path(tmp), settings={"log": {"level": "info", "format": "json"}}).start()
        try:
            client = daemon.client
            client.runtime.Version(pb.VersionRequest())
            samples = []
            for _ in range(args.count):
                t0 = time.perf_counter()
                client.runtime.Version(pb.VersionRequest())
                samples.append(time.perf_counter() - t0)
        finally:
            daemon.stop()
    samples.sort()
    p50 = statistics.median(samples) * 1e6
    p95 = samples[int(len(samples) * 0.95) - 1] * 1e6
    print(f"crid Version round trip: p50 {p50:.0f} us, p95 {p95:.0f} us, max {samples[-1] * 1e6:.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
