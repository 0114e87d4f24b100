"""The spec's cgroup resources, at creation and on update."""

import json
from pathlib import Path
from typing import Any

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.errors import InvalidArgument
from cri.host import HOST
from cri.runtime.spec.resources import update_resources
from tests.unit.spec.helpers import build, cc


def res(**kw: Any) -> pb.ContainerConfig:
    return cc(linux=pb.LinuxContainerConfig(resources=pb.LinuxContainerResources(**kw)))


def test_cpu_and_memory(env: Path) -> None:
    r = build(
        env,
        res(
            cpu_period=100000,
            cpu_quota=50000,
            cpu_shares=512,
            cpuset_cpus="0-1",
            cpuset_mems="0",
            memory_limit_in_bytes=1 << 26,
        ),
    )["linux"]["resources"]
    assert r["cpu"] == {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"}
    assert r["memory"] == {"limit": 1 << 26}


def test_no_resources(env: Path) -> None:
    r = build(env, res())["linux"]["resources"]
    assert set(r) == {"devices"}


def test_swap(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HOST, "swap_available", lambda: True)
    assert build(env, res(memory_limit_in_bytes=1000))["linux"]["resources"]["memory"] == {"limit": 1000, "swap": 1000}
    memory = build(env, res(memory_limit_in_bytes=1000, memory_swap_limit_in_bytes=3000))["linux"]["resources"][
        "memory"
    ]
    assert memory == {"limit": 1000, "swap": 3000}


def test_hugepages(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = res(hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=1 << 30)])
    assert "hugepageLimits" not in build(env, config)["linux"]["resources"]
    monkeypatch.setattr(HOST, "hugetlb_available", lambda: True)
    assert build(env, config)["linux"]["resources"]["hugepageLimits"] == [{"pageSize": "2MB", "limit": 1 << 30}]
    with pytest.raises(InvalidArgument, match="hugepage"):
        build(env, res(hugepage_limits=[pb.HugepageLimit(page_size="2M", limit=1)]))


def test_unified(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = res(unified={"memory.high": "1000000"})
    with pytest.raises(InvalidArgument, match="cgroup v2"):
        build(env, config)
    monkeypatch.setattr(HOST, "cgroup_v2", lambda: True)
    assert build(env, config)["linux"]["resources"]["unified"] == {"memory.high": "1000000"}


@pytest.mark.parametrize("kw", [{"cpu_shares": -1}, {"cpu_quota": -2}, {"memory_limit_in_bytes": -5}])
def test_bad_resources(env: Path, kw: dict[str, int]) -> None:
    with pytest.raises(InvalidArgument):
        build(env, res(**kw))


def test_update_resources(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HOST, "hugetlb_available", lambda: True)
    config = res(
        cpu_shares=512,
        cpu_quota=20000,
        memory_limit_in_bytes=1 << 26,
        hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=2)],
    )
    doc = build(env, config)
    before = json.dumps(doc)
    new = update_resources(
        doc,
        pb.LinuxContainerResources(
            cpu_quota=40000, memory_limit_in_bytes=1 << 27, hugepage_limits=[pb.HugepageLimit(page_size="2MB", limit=4)]
        ),
    )
    assert json.dumps(doc) == before  # the spec itself is left alone
    assert new["cpu"] == {"shares": 512, "quota": 40000}
    assert new["memory"] == {"limit": 1 << 27}
    assert new["hugepageLimits"] == [{"pageSize": "2MB", "limit": 4}]
    assert new["devices"] == doc["linux"]["resources"]["devices"]
    assert update_resources({}, pb.LinuxContainerResources(cpu_period=1000)) == {"cpu": {"period": 1000}}
    with pytest.raises(InvalidArgument):
        update_resources(doc, pb.LinuxContainerResources(unified={"a": "b"}))
