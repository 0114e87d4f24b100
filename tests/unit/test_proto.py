"""crid's api.proto must keep the upstream CRI wire contract exactly, and the
committed stubs must be what hack/update-proto generates from it."""

import os
import subprocess
from pathlib import Path

import pytest

from tests.unit.proto_contract import contract, differences

REPO = Path(__file__).resolve().parents[2]
OURS = REPO / "cri" / "api" / "v1" / "api.proto"
# CI and developers have shared/ next to the project; CRID_CRI_REFERENCE points elsewhere.
REFERENCE = Path(os.environ.get("CRID_CRI_REFERENCE", REPO.parent / "shared/reference/cri-api/v1/api.proto"))
STUBS = ["api_pb2.py", "api_pb2.pyi", "api_pb2_grpc.py"]


@pytest.fixture(scope="module")
def reference() -> dict[str, str]:
    if not REFERENCE.is_file():
        pytest.skip(f"the upstream CRI proto is not at {REFERENCE} (a clone with nothing beside it; CI has it there)")
    return contract(REFERENCE)


def test_contract_matches_reference(reference: dict[str, str]) -> None:
    diffs = differences(contract(OURS), reference)
    assert not diffs, "api.proto differs from the upstream CRI:\n" + "\n".join(diffs)


def test_contract_has_all_rpcs() -> None:
    rpcs = [k for k in contract(OURS) if k.startswith("rpc ")]
    assert len(rpcs) == 43
    assert "rpc RuntimeService.StreamContainers" in rpcs
    assert contract(OURS)["package"] == "runtime.v1"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("string runtime_name = 2;", "string runtime_name = 7;", "field VersionResponse.runtime_name"),
        ("string runtime_name = 2;", "bytes runtime_name = 2;", "field VersionResponse.runtime_name"),
        ("string runtime_name = 2;", "string runtimename = 2;", "field VersionResponse.runtimename"),
        (
            "returns (stream StreamContainersResponse)",
            "returns (StreamContainersResponse)",
            "rpc RuntimeService.StreamContainers",
        ),
        ("CGROUPFS = 1;", "CGROUPFS = 3;", "enum CgroupDriver.CGROUPFS"),
    ],
)
def test_contract_check_catches_changes(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = OURS.read_text()
    assert old in text
    mutated = tmp_path / "api.proto"
    mutated.write_text(text.replace(old, new, 1))
    diffs = differences(contract(mutated), contract(OURS))  # (ours equals upstream: the test above)
    assert any(d.startswith(expected) for d in diffs), diffs


def test_committed_stubs_are_fresh(tmp_path: Path) -> None:
    subprocess.run([str(REPO / "hack" / "update-proto"), str(tmp_path)], check=True)
    generated = tmp_path / "cri" / "api" / "v1"
    stale = [name for name in STUBS if (generated / name).read_bytes() != (OURS.parent / name).read_bytes()]
    assert not stale, f"stale generated stubs {stale}: run hack/update-proto (or make proto) and commit"
