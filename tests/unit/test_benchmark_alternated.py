"""benchmarks.grpc_floor.alternated: the runtime and its floor timed call by call in turns."""

import time

from benchmarks.grpc_floor import alternated
from benchmarks.workloads import WARMUP


def test_calls_take_turns_and_each_starts_every_other_turn() -> None:
    order: list[str] = []
    samples = alternated({"own": lambda: order.append("own"), "floor": lambda: order.append("floor")}, 4)

    timed = order[2 * min(WARMUP, 4) :]  # after the warm-up calls, untimed
    assert timed == ["own", "floor", "floor", "own", "own", "floor", "floor", "own"]
    assert set(samples) == {"own", "floor"}
    assert [len(s) for s in samples.values() if isinstance(s, list)] == [4, 4]


def test_each_sample_times_its_own_call_only() -> None:
    samples = alternated({"slow": lambda: time.sleep(0.02), "fast": lambda: None}, 3)
    slow, fast = samples["slow"], samples["fast"]
    assert isinstance(slow, list) and isinstance(fast, list)
    assert min(slow) >= 0.02 and max(fast) < 0.01
