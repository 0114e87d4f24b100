"""docs/METRICS.md lists exactly the metrics crid declares, with their types
and labels; the shipped rules and dashboard use only metrics listed there."""

import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import cri
from cri.metrics import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "METRICS.md"
ROW = re.compile(r"^\| `(crid_[a-z0-9_]+)` \| ([a-z]+) \| ([^|]*) \|")
SUFFIX = {"counter": "_total", "info": "_info"}  # what the exposition adds to a family's name
HISTOGRAM_SERIES = re.compile(r"_(bucket|count|sum)$")


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, labels) from the doc's tables."""
    rows: dict[str, tuple[str, frozenset[str]]] = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            name, kind, labels = m.groups()
            assert name not in rows, f"{name} is listed twice in {DOC.name}"
            rows[name] = (kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
    return rows


def _modules() -> list[Any]:
    """Every module of crid: importing them declares every metric."""
    mods = [cri]
    for info in pkgutil.walk_packages(cri.__path__, "cri."):
        if not info.name.endswith("__main__"):  # runs the CLI
            mods.append(importlib.import_module(info.name))
    return mods


def declared() -> dict[str, tuple[str, frozenset[str]]]:
    """name as exposed -> (type, labels) of every crid_* metric in REGISTRY."""
    labels: dict[str, set[str]] = {}
    for mod in _modules():
        for obj in vars(mod).values():
            # label names are not public API; both kinds keep them in _labelnames
            if isinstance(obj, MetricWrapperBase):
                labels.setdefault(obj._name, set()).update(obj._labelnames)
            elif type(obj).__module__.startswith("cri.") and hasattr(obj, "describe") and hasattr(obj, "collect"):
                for fam in obj.describe():
                    labels.setdefault(fam.name, set()).update(getattr(fam, "_labelnames", ()))
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for fam in REGISTRY.collect():
        if not fam.name.startswith("crid_"):
            continue
        seen = labels.get(fam.name, set()) | {k for s in fam.samples for k in s.labels}
        found[fam.name + SUFFIX.get(fam.type, "")] = (fam.type, frozenset(seen - {"le", "quantile"}))
    return found


def test_every_declared_metric_is_documented() -> None:
    doc, code = documented(), declared()
    missing = sorted(set(code) - set(doc))
    assert not missing, f"declared in code, not in {DOC.name}: {missing}"


def test_every_documented_metric_is_declared() -> None:
    doc, code = documented(), declared()
    gone = sorted(set(doc) - set(code))
    assert not gone, f"in {DOC.name}, declared nowhere in cri/: {gone}"


def test_types_and_labels_match() -> None:
    doc, code = documented(), declared()
    wrong = {name: (doc[name], code[name]) for name in set(doc) & set(code) if doc[name] != code[name]}
    assert not wrong, f"(documented, declared) differ: {wrong}"


def test_the_doc_table_is_read() -> None:
    # a table the parser stops recognising would make the checks above vacuous
    assert len(documented()) >= 20
    assert documented()["crid_operations_total"] == ("counter", frozenset({"operation", "code"}))


def _metric_names(expr: str) -> set[str]:
    return {HISTOGRAM_SERIES.sub("", n) for n in re.findall(r"\bcrid_[a-z0-9_]+", expr)}


def rule_exprs() -> list[str]:
    doc = yaml.safe_load((ROOT / "manifests" / "prometheus-rules.yaml").read_text())
    return [str(r["expr"]) for g in doc["groups"] for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((ROOT / "manifests" / "grafana-dashboard.json").read_text())
    return [str(t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


@pytest.mark.parametrize("source", ["rules", "dashboard"])
def test_manifests_use_documented_metrics(source: str) -> None:
    exprs = rule_exprs() if source == "rules" else dashboard_exprs()
    assert exprs
    used = set().union(*(_metric_names(e) for e in exprs))
    unknown = sorted(used - set(documented()))
    assert not unknown, f"the {source} use metrics {DOC.name} does not list: {unknown}"
