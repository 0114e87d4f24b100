"""The cold pulls against their floor, as a plot: per test image, crid's and containerd's
p50 seconds beside the machine's floors (benchmarks/pull_floor.py).

``python -m benchmarks.pull_plot RESULTS_JSON OUT_PNG`` draws it from a run's results.json.
"""

import json
import sys
from pathlib import Path
from typing import Any

FLOORS = (
    ("download", "floor: download"),
    ("stream", "floor: download+inflate+hash"),
    ("untar", "floor: tar -x"),
    ("floor", "floor: all at once"),
    ("stored", "floor: all at once + blobs fsync'ed"),
)
COLORS = {"crid": "tab:blue", "containerd": "tab:orange"}  # the floors gray
IMAGES = (("big", "big image (300 MB, 3 layers)"), ("small", "small-files image (20,000 files)"))


def bars(workloads: dict[str, Any], image: str) -> list[tuple[str, float]]:
    """(label, p50 seconds) of what was measured for ``image``: the runtimes' pulls, then the floors."""
    out = []
    for runtime, res in workloads.get(f"image_pull_{image}.seconds", {}).get("results", {}).items():
        if res.get("status") == "ok":
            out.append((runtime, float(res["p50"])))
    for key, label in FLOORS:
        res = workloads.get(f"pull_floor.{image}.{key}", {}).get("results", {}).get("machine", {})
        if res.get("status") == "ok":
            out.append((label, float(res["p50"])))
    return out


def plot(data: dict[str, Any], path: Path) -> bool:
    """Write the plot from a results.json document; False (and no file) when no pull was measured."""
    found = {title: b for image, title in IMAGES if (b := bars(data.get("workloads", {}), image))}
    if not found:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(found), figsize=(6 * len(found), 3.4), squeeze=False)
    for ax, (title, b) in zip(axes.flat, found.items(), strict=True):
        labels, seconds = [label for label, _ in b], [s for _, s in b]
        colors = [COLORS.get(label, "tab:gray") for label in labels]
        ax.barh(labels, seconds, color=colors)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("p50, s")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("cold pull time against the machine's floor", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


if __name__ == "__main__":
    sys.exit(0 if plot(json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])) else 1)
