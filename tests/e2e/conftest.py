"""Fixtures of the e2e suite: real crid daemons on temporary dirs, and the
leak check that runs after every module."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import harness, leaks
from tests.e2e.harness import CridProcess, is_root

pytestmark = pytest.mark.e2e


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not is_root():
        skip = pytest.mark.skip(reason="e2e tests drive runc, mounts and namespaces: they need root")
        for item in items:
            if "tests/e2e/" in str(item.fspath):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def e2e_base() -> Iterator[Path]:
    # short path: unix socket paths are limited to 107 bytes
    base = Path(tempfile.mkdtemp(prefix="crid-e2e-", dir="/tmp"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module", autouse=True)
def leak_check(e2e_base: Path) -> Iterator[None]:
    before = leaks.snapshot()
    harness.LEFTOVERS.clear()
    yield
    found = leaks.leaks(before, str(e2e_base)) + [f"file of a removed pod or container: {f}" for f in harness.LEFTOVERS]
    harness.LEFTOVERS.clear()
    assert not found, "the module left these behind:\n" + "\n".join(found)


class Daemons:
    """Creates daemons for one test and stops whatever is still running after it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[CridProcess] = []

    def new(self, name: str = "crid", *, env: dict[str, str] | None = None, **settings: object) -> CridProcess:
        d = CridProcess(self.base, name, dict(settings), env)
        self.started.append(d)
        return d

    def start(self, name: str = "crid", **settings: object) -> CridProcess:
        return self.new(name, env=None, **settings).start()

    def stop_all(self) -> None:
        for d in self.started:
            d.stop()


@pytest.fixture
def daemons(e2e_base: Path, request: pytest.FixtureRequest) -> Iterator[Daemons]:
    base = Path(tempfile.mkdtemp(prefix="t", dir=e2e_base))
    ds = Daemons(base)
    yield ds
    ds.stop_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        for d in ds.started:
            print(f"--- log of {d.dir} ---\n{d.log_text()}")


@pytest.fixture(scope="module")
def crid(e2e_base: Path) -> Iterator[CridProcess]:
    """One daemon shared by the read-only tests of a module."""
    base = Path(tempfile.mkdtemp(prefix="m", dir=e2e_base))
    d = CridProcess(base).start()
    yield d
    d.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)
