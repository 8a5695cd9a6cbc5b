"""`Linger`: batches close when full or when their oldest item has waited `within`."""

from __future__ import annotations

import asyncio
import time

import pytest

from consentry.eventing.batching import Linger

WITHIN = 0.2


async def test_a_lone_item_waits_the_window_for_company_then_goes_alone() -> None:
    linger: Linger[int] = Linger(10, WITHIN)
    await linger.put(1)
    started = time.monotonic()
    assert await linger.get() == [1]
    assert WITHIN * 0.9 <= time.monotonic() - started < WITHIN * 3


async def test_a_full_batch_goes_at_once_and_holds_no_more_than_the_maximum() -> None:
    linger: Linger[int] = Linger(3, 60.0)
    for item in range(3):
        await linger.put(item)
    started = time.monotonic()
    assert await linger.get() == [0, 1, 2]
    assert time.monotonic() - started < 1.0  # not the 60 s window
    assert len(linger) == 0


async def test_items_that_came_during_the_previous_batch_go_without_a_new_window() -> None:
    """The window counts from the oldest item's arrival, not from the last batch: what
    arrived while the caller worked and has waited `within` already is handed out at once
    (faust's `take` would wait the whole window again)."""
    linger: Linger[int] = Linger(100, WITHIN)
    await linger.put(1)
    assert await linger.get() == [1]
    await linger.put(2)  # arrives while the caller works on [1] ...
    await asyncio.sleep(WITHIN * 1.5)  # ... which takes longer than the window
    await linger.put(3)
    started = time.monotonic()
    assert await linger.get() == [2, 3]
    assert time.monotonic() - started < WITHIN / 2


async def test_a_full_buffer_makes_put_wait_until_a_batch_is_taken() -> None:
    linger: Linger[int] = Linger(2, 60.0)
    await linger.put(1)
    await linger.put(2)
    blocked = asyncio.create_task(linger.put(3))
    await asyncio.sleep(0.05)
    assert not blocked.done()
    assert len(linger) == 2
    assert await linger.get() == [1, 2]
    await asyncio.wait_for(blocked, 1.0)
    assert len(linger) == 1


async def test_get_waits_for_a_first_item() -> None:
    linger: Linger[str] = Linger(10, 0.0)
    getting = asyncio.create_task(linger.get())
    await asyncio.sleep(0.05)
    assert not getting.done()
    await linger.put("a")
    assert await asyncio.wait_for(getting, 1.0) == ["a"]


@pytest.mark.parametrize(("max_items", "within"), [(0, 1.0), (1, -0.1)])
def test_nonsense_limits_are_refused(max_items: int, within: float) -> None:
    with pytest.raises(ValueError, match="max_items"):
        Linger(max_items, within)
