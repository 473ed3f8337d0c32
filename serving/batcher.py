"""Micro-batching: single predictions that arrive together are scored in one call.

Each submission queues itself and the first one schedules a flush for the event loop's next
turn, by which time every request parsed in this turn has queued too. One scoring call then
serves them all (the online read's and the model's fixed costs dominate at one row), and an idle
service adds no delay, since the flush runs on the very next turn. `bench/results/serving.md`
shows what this does to throughput under concurrency.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")
ResultT = TypeVar("ResultT")


class MicroBatcher(Generic[ItemT, ResultT]):
    """Queues items submitted during one event-loop turn and scores them with one call.

    Args:
        score: Scores a list of items, returning one result per item in the same order. It
            runs on the event loop; whatever it raises reaches every waiter of the batch.
    """

    def __init__(self, *, score: Callable[[list[ItemT]], Sequence[ResultT]]) -> None:
        self._score = score
        self._pending: list[tuple[ItemT, asyncio.Future[ResultT]]] = []

    async def submit(self, item: ItemT) -> ResultT:
        """Queue one item and wait for its result.

        Args:
            item: The item to score.

        Returns:
            The item's result from the batch it was scored in.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ResultT] = loop.create_future()
        if not self._pending:
            loop.call_soon(self.flush)
        self._pending.append((item, future))
        return await future

    def flush(self) -> None:
        """Score every queued item now and answer its waiter (a result or the scorer's error)."""
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            results = self._score([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"the scorer returned {len(results)} results for {len(batch)} items")
        except Exception as exc:
            for _, future in batch:
                # A waiter whose request was cancelled (client gone) no longer takes an answer.
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
