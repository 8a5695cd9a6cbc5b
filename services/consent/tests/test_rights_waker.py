"""The API's wake-ups of the `rights` worker, against a real PostgreSQL as the application's
role: sent after the commit, in a transaction of their own, many asked for at once sent as
one (or one more after the one in flight)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from consentry.consent.rights import repository
from consentry.consent.rights.waker import WorkerWaker

pytestmark = pytest.mark.integration


async def test_wake_ups_asked_for_together_are_sent_together(app_dsn: str) -> None:
    pool = await asyncpg.create_pool(app_dsn, min_size=1, max_size=2)
    listener = await asyncpg.connect(app_dsn)
    heard: list[str] = []
    await listener.add_listener(repository.CHANNEL, lambda *args: heard.append(args[2]))

    async def heard_all(count: int) -> None:
        async with asyncio.timeout(5):
            while len(heard) < count:
                await asyncio.sleep(0.01)
        assert heard == [repository.CHANNEL] * count

    try:
        waker = WorkerWaker(pool)
        for _ in range(20):
            waker.wake()
        await waker.close()
        assert 1 <= waker.sent <= 2  # one at once, one for those asked during it
        await heard_all(waker.sent)

        waker.wake()  # later on: sent again
        await waker.close()
        await heard_all(waker.sent)
    finally:
        await listener.close()
        await pool.close()
