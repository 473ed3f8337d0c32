"""The micro-batcher on its own: concurrent submissions share one scoring call, in order."""

from __future__ import annotations

import asyncio

import pytest

from churnops.serving.batcher import MicroBatcher


class _Scorer:
    """Answers each item with a string naming it, and records every call's batch."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[list[int]] = []
        self.error = error

    def __call__(self, items: list[int]) -> list[str]:
        self.calls.append(list(items))
        if self.error is not None:
            raise self.error
        return [f"scored-{i}" for i in items]


def test_concurrent_submissions_are_scored_in_one_call_and_answered_in_order() -> None:
    scorer = _Scorer()
    batcher: MicroBatcher[int, str] = MicroBatcher(score=scorer)

    async def run() -> list[str]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(25)))

    assert asyncio.run(run()) == [f"scored-{i}" for i in range(25)]
    assert scorer.calls == [list(range(25))]


def test_a_lone_submission_is_scored_without_waiting_for_company() -> None:
    scorer = _Scorer()
    batcher: MicroBatcher[int, str] = MicroBatcher(score=scorer)

    async def run() -> list[str]:
        return [await batcher.submit(i) for i in range(3)]

    assert asyncio.run(run()) == ["scored-0", "scored-1", "scored-2"]
    assert scorer.calls == [[0], [1], [2]]


def test_a_scorer_error_reaches_every_waiter_of_the_batch() -> None:
    error = RuntimeError("online store down")
    scorer = _Scorer(error=error)
    batcher: MicroBatcher[int, str] = MicroBatcher(score=scorer)

    async def run() -> list[str | BaseException]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)), return_exceptions=True)

    assert asyncio.run(run()) == [error] * 5
    assert scorer.calls == [[0, 1, 2, 3, 4]]


def test_the_next_batch_is_scored_after_a_failed_one() -> None:
    scorer = _Scorer(error=ValueError("boom"))
    batcher: MicroBatcher[int, str] = MicroBatcher(score=scorer)

    async def run() -> str:
        with pytest.raises(ValueError, match="boom"):
            await batcher.submit(1)
        scorer.error = None
        return await batcher.submit(2)

    assert asyncio.run(run()) == "scored-2"
    assert scorer.calls == [[1], [2]]


def test_a_scorer_returning_too_few_results_fails_every_waiter() -> None:
    batcher: MicroBatcher[int, str] = MicroBatcher(score=lambda items: ["only one"])

    async def run() -> list[str | BaseException]:
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    results = asyncio.run(run())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "returned 1 results for 3 items" in str(results[0])


def test_a_cancelled_waiter_does_not_keep_the_others_from_their_answers() -> None:
    scorer = _Scorer()
    batcher: MicroBatcher[int, str] = MicroBatcher(score=scorer)

    async def run() -> tuple[list[str], bool]:
        tasks = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0)  # every task has queued its item; the flush has not run yet
        tasks[1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return [tasks[0].result(), tasks[2].result()], tasks[1].cancelled()

    answered, cancelled = asyncio.run(run())
    assert answered == ["scored-0", "scored-2"]
    assert cancelled
    assert scorer.calls == [[0, 1, 2]]
