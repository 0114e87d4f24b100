"""Summaries and the result files: results.json, results.md, samples.json, latency.png."""

import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

import cri
from benchmarks import oci
from benchmarks.core import Unit

if TYPE_CHECKING:
    from benchmarks.harness import Results, WorkloadResult

CONMON = "/usr/bin/conmon"
CONTAINERD = "/usr/bin/containerd"
REPO = Path(__file__).resolve().parent.parent


def percentile(sorted_samples: list[float], q: float) -> float:
    """Nearest-rank percentile of already sorted samples."""
    rank = max(1, math.ceil(q / 100 * len(sorted_samples)))
    return sorted_samples[rank - 1]


def summary(samples: list[float]) -> dict[str, float | int]:
    s = sorted(samples)
    return {
        "count": len(s),
        "p50": percentile(s, 50),
        "p95": percentile(s, 95),
        "p99": percentile(s, 99),
        "max": s[-1],
        "min": s[0],
        "mean": sum(s) / len(s),
    }


def scale(unit: Unit, magnitude: float) -> tuple[float, str]:
    """Divisor and label to show values of about ``magnitude``."""
    if unit == "bytes":
        return 1024 * 1024, "MiB"
    if unit in ("MB/s", "%"):
        return 1.0, unit
    if magnitude < 1e-3:
        return 1e-6, "µs"
    if magnitude < 1.0:
        return 1e-3, "ms"
    return 1.0, "s"


def fmt(value: float, divisor: float, label: str) -> str:
    v = value / divisor
    digits = 0 if abs(v) >= 100 else 1 if abs(v) >= 10 else 2
    return f"{v:.{digits}f} {label}"


# --- machine and versions -----------------------------------------------------


def _first_line(path: str, prefix: str) -> str:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split("=", 1)[-1].split(":", 1)[-1].strip().strip('"')
    except OSError:
        pass
    return "unknown"


def cgroup_mode() -> str:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "v2 (unified)"
    if os.path.isdir("/sys/fs/cgroup/unified"):
        return "v1 (hybrid)"
    return "v1 (legacy)"


def machine_info() -> dict[str, Any]:
    return {
        "cores": os.cpu_count(),
        "cpu": _first_line("/proc/cpuinfo", "model name"),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "os": _first_line("/etc/os-release", "PRETTY_NAME"),
        "python": platform.python_version(),
        "cgroups": cgroup_mode(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def tool_versions() -> dict[str, str]:
    return {
        "crid": f"{cri.__version__} (git {_git_revision()})",
        "containerd": oci.version(CONTAINERD),
        "runc": oci.version(oci.RUNC),
        "crun": oci.version(oci.CRUN),
        "conmon": oci.version(CONMON),
    }


# --- results -----------------------------------------------------------------


def title(result: "WorkloadResult", target: str) -> str:
    return result.workload.title.replace("{target}", target)


def one_line(result: "WorkloadResult") -> str:
    w = result.workload
    parts = []
    for name, o in result.outcomes.items():
        if o.status == "ok" and o.samples:
            stats = summary(o.samples)
            div, label = scale(w.unit, stats["p50"])
            tail = f", p99 {fmt(stats['p99'], div, label)}" if len(o.samples) >= 100 else ""
            parts.append(f"{name} p50 {fmt(stats['p50'], div, label)}{tail} (n={len(o.samples)})")
        else:
            parts.append(f"{name} {o.status}")
    return f"{w.name}: {'; '.join(parts)} [{result.seconds:.1f}s]"


def ratio(result: "WorkloadResult") -> float | None:
    a, b = (result.outcomes.get(n) for n in ("crid", "containerd"))
    if a is None or b is None or not a.samples or not b.samples:
        return None
    pa, pb = summary(a.samples)["p50"], summary(b.samples)["p50"]
    return pa / pb if pb else None


def to_json(results: "Results") -> dict[str, Any]:
    workloads: dict[str, Any] = {}
    for r in results.workloads:
        per_target: dict[str, Any] = {}
        for name, o in r.outcomes.items():
            if o.status == "ok" and o.samples:
                per_target[name] = {"status": "ok", **summary(o.samples)}
            else:
                status = o.status if o.status != "ok" else "failed"
                per_target[name] = {"status": status, "reason": o.reason or "no samples"}
        entry: dict[str, Any] = {
            "title": r.workload.title,
            "kind": r.workload.kind,
            "unit": r.workload.unit,
            "seconds": round(r.seconds, 2),
            "results": per_target,
        }
        if r.workload.kind == "cri":
            entry["ratio_p50_crid_containerd"] = ratio(r)
        workloads[r.workload.name] = entry
    return {
        "machine": results.machine,
        "versions": results.versions,
        "options": results.options,
        "workloads": workloads,
        "pull_floor_ratios": pull_floor_ratios(workloads),
        "pull_stored_floor_ratios": pull_floor_ratios(workloads, "stored"),
    }


def pull_floor_ratios(workloads: dict[str, Any], floor_key: str = "floor") -> dict[str, dict[str, float]]:
    """Per image and runtime: the cold pull's p50 seconds / the p50 of one of the machine's floors
    (benchmarks/pull_floor.py): the floor itself, or the stored floor."""
    out: dict[str, dict[str, float]] = {}
    for image in ("big", "small"):
        floor = workloads.get(f"pull_floor.{image}.{floor_key}", {}).get("results", {}).get("machine", {})
        pulls = workloads.get(f"image_pull_{image}.seconds", {}).get("results", {})
        for runtime, res in pulls.items():
            if floor.get("status") == "ok" and res.get("status") == "ok" and floor["p50"]:
                out.setdefault(image, {})[runtime] = res["p50"] / floor["p50"]
    return out


def _cells(o_json: dict[str, Any], div: float, label: str) -> list[str]:
    if o_json["status"] != "ok":
        return [o_json["status"], "", ""]
    return [fmt(o_json[k], div, label) for k in ("p50", "p95", "max")]


def _images_lines(images: dict[str, Any] | None) -> list[str]:
    if not images:
        return []
    parts = [
        f"{name} `{i['ref']}` ({i['compressed_bytes'] / 1e6:.1f} MB compressed, {len(i['blobs']) - 1} layer(s), "
        f"{i['unpacked_bytes'] / 1e6:.1f} MB unpacked)"
        for name, i in images.items()
    ]
    return ["Test images, in a local docker-registry on loopback: " + "; ".join(parts) + ".", ""]


def to_markdown(results: "Results") -> str:
    data = to_json(results)
    m = data["machine"]
    lines = [
        "# crid benchmark results",
        "",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, {m['os']}, "
        f"kernel {m['kernel']}, cgroups {m['cgroups']}, Python {m['python']}, "
        f"load average at start {m['loadavg_at_start']}.",
        "",
        "Versions: " + "; ".join(f"{k}: {v}" for k, v in data["versions"].items()) + ".",
        "",
        f"Options: {json.dumps({k: v for k, v in data['options'].items() if k != 'test_images'})}.",
        "",
        *_images_lines(data["options"].get("test_images")),
        "Ratios are crid/containerd of the p50s: below 1 crid is faster or smaller, except for MB/s "
        "(above 1 crid is faster).",
        "",
        "| operation | crid p50 | crid p95 | crid max | containerd p50 | containerd p95 | containerd max "
        "| crid/containerd (p50) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    notes: list[str] = []

    def note(name: str, target: str, o_json: dict[str, Any]) -> None:
        if o_json["status"] != "ok":
            notes.append(f"- {name}, {target}: {o_json['status']}: {o_json['reason']}")

    floor_rows: list[str] = []
    machine_rows: list[str] = []
    for r in results.workloads:
        entry = data["workloads"][r.workload.name]
        res = entry["results"]
        p50s = [v["p50"] for v in res.values() if v["status"] == "ok"]
        div, label = scale(r.workload.unit, max(p50s) if p50s else 0.0)
        if r.workload.kind != "cri":
            for target, o_json in res.items():
                count = str(o_json.get("count", ""))
                row = " | ".join(_cells(o_json, div, label))
                (floor_rows if r.workload.kind == "oci" else machine_rows).append(
                    f"| {title(r, target)} | {row} | {count} |"
                )
                note(r.workload.name, target, o_json)
            continue
        rt = entry["ratio_p50_crid_containerd"]
        cells = _cells(res["crid"], div, label) + _cells(res["containerd"], div, label)
        lines.append(f"| {r.workload.title} | {' | '.join(cells)} | {f'{rt:.2f}' if rt else '—'} |")
        for target, o_json in res.items():
            note(r.workload.name, target, o_json)
    if floor_rows:
        lines += [
            "",
            "Floor: the same busybox bundle run by the OCI runtime directly, no CRI daemon:",
            "",
            "| operation | p50 | p95 | max | count |",
            "|---|---:|---:|---:|---:|",
            *floor_rows,
        ]
    if machine_rows:
        ratios, stored = (
            [
                f"{image}: " + ", ".join(f"{runtime} {v:.2f}" for runtime, v in by_runtime.items())
                for image, by_runtime in data[key].items()
            ]
            for key in ("pull_floor_ratios", "pull_stored_floor_ratios")
        )
        lines += [
            "",
            "Floor of a cold pull: the machine alone, no runtime (benchmarks/pull_floor.py):",
            "",
            "| operation | p50 | p95 | max | count |",
            "|---|---:|---:|---:|---:|",
            *machine_rows,
            "",
            "Cold pull seconds / floor (p50s): " + ("; ".join(ratios) or "no cold pull measured") + ".",
            "Cold pull seconds / stored floor (p50s): " + ("; ".join(stored) or "no cold pull measured") + ".",
        ]

    from benchmarks import scaling  # it builds on this module

    lines += scaling.markdown_lines(results)
    if notes:
        lines += ["", "Not supported or failed:", "", *notes]
    return "\n".join(lines) + "\n"


def plot(results: "Results", path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in results.workloads if any(o.samples for o in r.outcomes.values())]
    ncols = min(3, max(1, len(shown)))
    nrows = max(1, math.ceil(len(shown) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    for ax, r in zip(axes.flat, shown, strict=False):
        names = list(r.outcomes)
        p50s = [summary(o.samples)["p50"] for o in r.outcomes.values() if o.samples]
        div, label = scale(r.workload.unit, max(p50s))
        data = [[v / div for v in r.outcomes[n].samples] for n in names if r.outcomes[n].samples]
        positions = [i + 1 for i, n in enumerate(names) if r.outcomes[n].samples]
        ax.boxplot(data, positions=positions, widths=0.5, flierprops={"markersize": 2, "alpha": 0.4})
        ax.set_xticks(range(1, len(names) + 1))
        ax.set_xticklabels([n if r.outcomes[n].samples else f"{n}\n(not supported)" for n in names])
        ax.set_xlim(0.4, len(names) + 0.6)
        lo = min(min(d) for d in data)
        hi = max(max(d) for d in data)
        if r.workload.unit in ("bytes", "%"):
            ax.set_ylim(bottom=0, top=hi * 1.1 or 1.0)  # all zero (an idle CPU): an axis all the same
        elif lo > 0 and hi / lo > 50:
            ax.set_yscale("log")
        ax.set_title(title(r, "/".join(names)), fontsize=9)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    if not shown:
        axes.flat[0].set_visible(True)
        axes.flat[0].text(0.5, 0.5, "no samples", ha="center", va="center")
    fig.suptitle("crid vs containerd: distribution per workload", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(results: "Results", directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {
        "json": directory / "results.json",
        "markdown": directory / "results.md",
        "samples": directory / "samples.json",
        "plot": directory / "latency.png",
    }
    data = to_json(results)
    files["json"].write_text(json.dumps(data, indent=2) + "\n")
    files["markdown"].write_text(to_markdown(results))
    samples = {r.workload.name: {n: o.samples for n, o in r.outcomes.items()} for r in results.workloads}
    files["samples"].write_text(json.dumps(samples) + "\n")
    plot(results, files["plot"])
    from benchmarks import scaling  # it builds on this module

    if scaling.plot(results, directory / "scaling.png"):
        files["scaling"] = directory / "scaling.png"
    from benchmarks import pull_plot

    if pull_plot.plot(data, directory / "pull.png"):
        files["pull"] = directory / "pull.png"
    return files
