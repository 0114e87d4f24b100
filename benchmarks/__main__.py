"""``python -m benchmarks``: crid against containerd, side by side, in one run.

    python -m benchmarks                          # every workload, default counts
    python -m benchmarks --workload version --count 500 --runs 3
    python -m benchmarks --list                   # the workloads and what they need
    python -m benchmarks --big-mb 50 --small-files 2000   # smaller test images

Results go to ``--results DIR`` (default benchmarks/results): results.json,
results.md, samples.json and latency.png. Needs root (containerd, runc).
"""

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType

from benchmarks.core import ImageSizes
from benchmarks.harness import Options, run, select

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"


class Terminated(BaseException):
    """SIGTERM or SIGHUP: unwinds like Ctrl-C so that everything started is stopped."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--workload",
        action="append",
        metavar="NAME",
        help="run only this workload (repeatable; default: all, see --list)",
    )
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS, metavar="DIR", help="output directory")
    p.add_argument("--count", type=int, help="samples per round and runtime (default: per workload)")
    p.add_argument("--runs", type=int, help="A/B rounds (crid, containerd, crid, ...) (default: per workload)")
    sizes = ImageSizes()
    p.add_argument(
        "--big-mb",
        type=float,
        default=sizes.big_bytes / 1e6,
        help="MB of incompressible files in the big test image (default: %(default)g)",
    )
    p.add_argument(
        "--big-layers", type=int, default=sizes.big_layers, help="layers of the big image (default: %(default)d)"
    )
    p.add_argument(
        "--small-files",
        type=int,
        default=sizes.small_files,
        help="files in the small-files test image (default: %(default)d)",
    )
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p


def _list() -> None:
    for w in select(None):
        needs = []
        if w.rpcs:
            needs.append("RPCs " + ", ".join(w.rpcs))
        if w.needs_images:
            needs.append("test images")
        extra = f"  [needs {'; '.join(needs)}]" if needs else ""
        print(f"{w.name:24} {w.kind:3}  count {w.count:<5} runs {w.runs}  {w.title if not w.rows else ''}{extra}")
        for row in w.rows:
            print(f"{'':24}   - {row.title} ({row.unit})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        _list()
        return 0
    if os.geteuid() != 0:
        print("benchmarks: containerd and runc need root", file=sys.stderr)
        return 2
    try:
        select(args.workload)
    except ValueError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    command = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])
    if args.big_mb <= 0 or args.big_layers < 1 or args.small_files < 1:
        print("benchmarks: --big-mb, --big-layers and --small-files must be positive", file=sys.stderr)
        return 2
    options = Options(
        results_dir=args.results,
        workloads=args.workload,
        count=args.count,
        runs=args.runs,
        sizes=ImageSizes(big_bytes=int(args.big_mb * 1e6), big_layers=args.big_layers, small_files=args.small_files),
        command=command,
    )
    previous = {s: signal.signal(s, _raise_terminated) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        results = run(options)
    except (KeyboardInterrupt, Terminated) as exc:
        print(f"benchmarks: interrupted ({type(exc).__name__} {exc}); everything started was stopped")
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(results.files["markdown"].read_text())
    for kind, path in results.files.items():
        print(f"{kind}: {path}")
    failed = results.failed()
    if failed:
        print("failed:\n  " + "\n  ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
