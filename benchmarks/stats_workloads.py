"""ListPodSandboxStats: what kubelet's stats collection (the summary API, every
10 to 15 s) costs the runtime, on a small node and on a full one (110 pods,
kubelet's default maximum), each pod with one sleeping busybox container.

Every pod is ready and has its container running before the first timed call;
a call that does not list them all is a failure, not a sample.
"""

import functools
from concurrent.futures import ThreadPoolExecutor

from benchmarks.core import CriTarget, Params, Row, RowSamples, cri_rows_workload
from benchmarks.cri_calls import (
    CONTAINER_RPCS,
    PARALLEL,
    RPC_TIMEOUT,
    create_container,
    ensure_busybox,
    pod_config,
    remove_pod,
    run_pod,
    start_container,
)
from benchmarks.workloads import timed
from cri.api.v1 import api_pb2 as pb

SIZES = (20, 110)
SMOKE_COUNT = 5  # below this many samples the run is a smoke test


def _pod_with_sleeper(t: CriTarget, p: Params, busybox: str, i: int) -> str:
    config = pod_config(t, p, f"stats-{i}")
    pod_id = run_pod(t, config)
    start_container(t, create_container(t, pod_id, config, busybox, "sleeper"))
    return pod_id


def _list_stats(t: CriTarget, want: int) -> None:
    got = len(t.client.runtime.ListPodSandboxStats(pb.ListPodSandboxStatsRequest(), timeout=RPC_TIMEOUT).stats)
    if got < want:
        raise RuntimeError(f"{t.name}: ListPodSandboxStats lists {got} pods, {want} are running")


@cri_rows_workload(
    "pod_stats_list",
    tuple(Row(f"pods_{n}", f"ListPodSandboxStats, {n} pods (1 sleeping container each)") for n in SIZES),
    count=30,
    runs=2,
    rpcs=(*CONTAINER_RPCS, "ListPodSandboxStats"),
    needs_images=True,
)
def pod_stats_list(t: CriTarget, p: Params) -> RowSamples:
    """ListPodSandboxStats latency with 20, then 110 ready pods (pods added between the two)."""
    busybox = ensure_busybox(t, p)
    pods: list[str] = []
    out: RowSamples = {}
    try:
        # a smoke run (tiny counts) checks that the workload works, not its numbers: a few pods do
        real = p.count >= SMOKE_COUNT
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="bench-stats") as pool:
            for i, n in enumerate(SIZES):
                want = n if real else i + 2
                pods += pool.map(lambda i: _pod_with_sleeper(t, p, busybox, i), range(len(pods), want))
                out[f"pods_{n}"] = timed(functools.partial(_list_stats, t, want), p.count, warmup=3 if real else 0)
        return out
    finally:
        with ThreadPoolExecutor(PARALLEL, thread_name_prefix="bench-stats") as pool:
            list(pool.map(lambda pod_id: remove_pod(t, pod_id), pods))
