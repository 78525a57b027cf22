"""Group commit on its own: what arrives while a write runs goes in the next one, each item keeps its own
outcome, and each runs in the context of whoever submitted it."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

import pytest

from skuflow.platform.group_commit import GroupCommit, Submitted

who: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


class Refused(Exception):
    pass


class Store:
    """A fake transactional store: a write of several items commits all or none."""

    def __init__(self) -> None:
        self.committed: list[str] = []
        self.writes: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.broken = False

    async def one(self, item: str) -> str:
        return (await self.write([Submitted(item)]))[0]  # type: ignore[return-value]

    async def write(self, batch: Sequence[Submitted[str]]) -> list[str | Exception]:
        self.writes.append([submitted.item for submitted in batch])
        await self.gate.wait()
        results: list[str | Exception] = []
        pending: list[str] = []
        for submitted in batch:
            try:
                results.append(await submitted.run(self._check))
                pending.append(submitted.item)
            except Refused as refused:
                results.append(refused)
        if self.broken and len(batch) > 1:
            raise RuntimeError("the transaction failed")
        self.committed += pending
        return results

    async def _check(self, item: str) -> str:
        if item.startswith("bad"):
            raise Refused(item)
        return f"{item} by {who.get()}"


async def submit_as(group: GroupCommit[str, str], name: str, item: str) -> str:
    who.set(name)
    return await group.submit(item)


async def test_what_arrives_while_a_write_runs_goes_together_in_the_next_each_in_its_senders_context():
    store = Store()
    group = GroupCommit(store.write, store.one)
    store.gate.clear()
    first = asyncio.create_task(submit_as(group, "alice", "a"))
    await asyncio.sleep(0)
    others = [asyncio.create_task(submit_as(group, name, name[0] * 2)) for name in ("bob", "carol", "dave")]
    await asyncio.sleep(0)
    store.gate.set()

    assert await first == "a by alice"
    assert await asyncio.gather(*others) == ["bb by bob", "cc by carol", "dd by dave"]
    assert store.writes == [["a"], ["bb", "cc", "dd"]]
    assert (group.gathering.batches, group.gathering.largest) == (2, 3)


async def test_an_item_refused_before_writing_fails_alone_and_the_others_commit():
    store = Store()
    group = GroupCommit(store.write, store.one)
    results = await asyncio.gather(*(group.submit(item) for item in ("x", "bad-1", "y")), return_exceptions=True)
    assert results[0] == "x by nobody"
    assert results[2] == "y by nobody"
    assert isinstance(results[1], Refused)
    assert sorted(store.committed) == ["x", "y"]


async def test_a_failed_transaction_performs_each_item_alone():
    store = Store()
    store.broken = True
    group = GroupCommit(store.write, store.one)
    results = await asyncio.gather(*(group.submit(item) for item in ("x", "y", "z")))
    assert results == ["x by nobody", "y by nobody", "z by nobody"]
    assert store.writes[0] == ["x", "y", "z"]
    assert store.writes[1:] == [["x"], ["y"], ["z"]]
    assert sorted(store.committed) == ["x", "y", "z"], "each once, alone"


async def test_a_group_is_never_larger_than_asked():
    store = Store()
    group = GroupCommit(store.write, store.one, max_batch=2)
    store.gate.clear()
    tasks = [asyncio.create_task(group.submit(str(n))) for n in range(7)]
    await asyncio.sleep(0)
    store.gate.set()
    await asyncio.gather(*tasks)
    assert max(map(len, store.writes)) == 2
    assert sorted(store.committed) == [str(n) for n in range(7)]


async def test_a_request_that_goes_away_before_its_group_is_left_out():
    store = Store()
    group = GroupCommit(store.write, store.one)
    store.gate.clear()
    first = asyncio.create_task(group.submit("a"))
    await asyncio.sleep(0)
    gone = asyncio.create_task(group.submit("b"))
    kept = asyncio.create_task(group.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    store.gate.set()
    assert (await first, await kept) == ("a by nobody", "c by nobody")
    with pytest.raises(asyncio.CancelledError):
        await gone
    assert store.committed == ["a", "c"]
