"""The shared lifecycle pieces: per-id locks that go when unused, and record
changes that are written in the same call."""

import asyncio
from pathlib import Path

import pytest

from cri.api.v1 import api_pb2 as pb
from cri.keyed_locks import KeyedLocks
from cri.runtime.lifecycle import Steps
from cri.runtime.sandbox_store import Sandbox, SandboxStore, State
from cri.store import Store


def test_a_lock_goes_once_nobody_holds_or_waits_for_it() -> None:
    async def main() -> None:
        locks = KeyedLocks()
        order: list[str] = []
        entered = asyncio.Event()

        async def first() -> None:
            async with locks.hold("a"):
                entered.set()
                await asyncio.sleep(0.02)
                order.append("first")

        async def second() -> None:
            await entered.wait()
            async with locks.hold("a"):
                order.append("second")

        task = asyncio.gather(first(), second())
        await entered.wait()
        await asyncio.sleep(0)
        assert locks.locked("a") and len(locks) == 1 and not locks.locked("b")
        await task
        assert order == ["first", "second"] and len(locks) == 0 and not locks.locked("a")

    asyncio.run(main())


def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    async def main() -> None:
        locks = KeyedLocks()
        async with locks.hold("a"):
            waiter = asyncio.ensure_future(locks.hold("a").__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        assert len(locks) == 0

    asyncio.run(main())


def test_steps_run_to_the_end_and_raise_the_first_failure() -> None:
    async def boom(n: int) -> None:
        raise ValueError(n)

    async def main() -> list[str]:
        steps = Steps("id", "teardown step failed")
        done = []
        for n in range(3):
            if await steps.run(f"step {n}", boom(n) if n != 1 else asyncio.sleep(0)):
                done.append(f"step {n}")
        with pytest.raises(ValueError, match="0"):
            steps.raise_first()
        return done

    assert asyncio.run(main()) == ["step 1"]


def test_update_sets_and_writes_in_one_call(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    table = SandboxStore(store)
    config = pb.PodSandboxConfig(metadata=pb.PodSandboxMetadata(name="p", uid="u", namespace="n"))
    sb = Sandbox(id="a" * 64, name="p", fingerprint="", handler="runc", state=State.CREATING, created_at=1,
                 config=config)  # fmt: skip
    table.add(sb)
    table.update(sb, state=State.READY, ips=["10.0.0.2"])
    with pytest.raises(AttributeError, match="no field 'nope'"):
        table.update(sb, nope=1)
    again = SandboxStore(store).by_id[sb.id]  # read back from the database
    assert (again.state, again.ips) == (State.READY, ["10.0.0.2"])
    store.close()
