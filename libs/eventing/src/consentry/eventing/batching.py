"""Batches that close like a Kafka producer's: when full, or when their oldest item has
waited `within` seconds (`linger.ms`).

faust's `Stream.take(max_, within)` starts its `within` window again after every batch and
adds nothing to the buffer while the agent works through the previous one. Under steady
load every cycle therefore lasts the batch's own work plus the whole window, and an event
that arrives during the work waits for both. With `Linger`, items keep arriving while the
previous batch is worked on (up to `max_items`), and the next batch is handed out at once
when its oldest item has waited long enough already: under load the window costs nothing,
and when quiet an item still waits at most `within` for company.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Linger(Generic[T]):
    """A bounded buffer handing out batches of at most `max_items`; `put` waits while it is
    full (backpressure), `get` returns the next batch."""

    def __init__(
        self, max_items: int, within: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_items < 1 or within < 0:
            raise ValueError("max_items must be at least 1 and within not negative")
        self._max = max_items
        self._within = within
        self._clock = clock
        self._items: deque[tuple[float, T]] = deque()
        self._arrived = asyncio.Event()  # an item came (`get` waits on it when empty)
        self._full = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: T) -> None:
        """Add `item`, once there is room."""
        while len(self._items) >= self._max:
            self._room.clear()
            await self._room.wait()
        self._items.append((self._clock(), item))
        self._arrived.set()
        if len(self._items) >= self._max:
            self._full.set()

    async def get(self) -> list[T]:
        """The next batch: as soon as `max_items` wait, or when the oldest item has waited
        `within` seconds; never empty."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        waited = self._clock() - self._items[0][0]
        if len(self._items) < self._max and waited < self._within:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._within - waited)
        batch = [self._items.popleft()[1] for _ in range(min(len(self._items), self._max))]
        if len(self._items) < self._max:
            self._full.clear()
        self._room.set()
        return batch
