"""Latency against a count (pods on the node): the rows of a multi-row workload
whose keys end in the count they were measured at (``node``'s ``run_20``,
``pod_stats_list``'s ``pods_110``), as a table in results.md and as
scaling.png, one panel per operation, a line per runtime."""

import re
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.report import fmt, scale, summary

if TYPE_CHECKING:
    from benchmarks.harness import Results, WorkloadResult

_AT_COUNT = re.compile(r"^(?P<op>.+)_(?P<n>\d+)$")
Series = dict[int, "WorkloadResult"]  # count -> the row measured at it


def series(results: "Results") -> dict[str, Series]:
    """{label: {count: row}} for each operation measured at two counts or more."""
    found: dict[tuple[str, str], Series] = {}
    labels: dict[tuple[str, str], str] = {}
    for r in results.workloads:
        w = r.workload
        m = _AT_COUNT.match(w.name.removeprefix(f"{w.parent}."))
        if not w.parent or w.unit != "s" or m is None:
            continue
        key = (w.parent, m["op"])
        found.setdefault(key, {})[int(m["n"])] = r
        labels[key] = w.title.split(": ", 1)[1] if ": " in w.title else w.parent
    return {labels[k]: v for k, v in found.items() if len(v) > 1}


def _p50s(s: Series, target: str) -> dict[int, float]:
    out = {}
    for n, r in sorted(s.items()):
        o = r.outcomes.get(target)
        if o is not None and o.samples:
            out[n] = float(summary(o.samples)["p50"])
    return out


def markdown_lines(results: "Results") -> list[str]:
    found = series(results)
    if not found:
        return []
    targets = list(next(iter(next(iter(found.values())).values())).outcomes)
    head = " | ".join(f"{t} p50 by count" for t in targets)
    growth = " | ".join(f"{t} last/first" for t in targets)
    lines = [
        "",
        "Latency against the number of pods (p50; flat is good, last/first within 0.8-1.2):",
        "",
        f"| operation | {head} | {growth} |",
        "|---|" + "---|" * len(targets) + "---:|" * len(targets),
    ]
    for label, s in found.items():
        cells, ratios = [], []
        for t in targets:
            p50s = _p50s(s, t)
            if not p50s:
                cells.append("—")
                ratios.append("—")
                continue
            div, unit = scale("s", max(p50s.values()))
            cells.append(" · ".join(f"{n}: {fmt(v, div, unit)}" for n, v in p50s.items()))
            first, last = p50s[min(p50s)], p50s[max(p50s)]
            ratios.append(f"{last / first:.2f}" if first else "—")
        lines.append(f"| {label} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    return lines


def plot(results: "Results", path: Path) -> bool:
    """Write the plot; False (and no file) when no operation was measured at two counts."""
    found = series(results)
    if not found:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ncols = min(4, len(found))
    nrows = -(-len(found) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(found) :]:
        ax.set_visible(False)
    for ax, (label, s) in zip(axes.flat, found.items(), strict=False):
        targets = list(next(iter(s.values())).outcomes)
        everything = [v for t in targets for v in _p50s(s, t).values()]
        div, unit = scale("s", max(everything) if everything else 0.0)
        for t in targets:
            p50s = _p50s(s, t)
            ax.plot(list(p50s), [v / div for v in p50s.values()], marker="o", label=t)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("pods")
        ax.set_ylabel(f"p50, {unit}")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("latency against the number of pods", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
