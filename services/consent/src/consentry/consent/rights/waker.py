"""Wakes the `rights` worker after the API committed work for it, many commits at a time.

A request that is (or becomes) in progress must be fanned out soon; the worker polls only
every `CONSENTRY_RIGHTS_INTERVAL_SECONDS`. The API therefore NOTIFYs `consentry_rights`
after the commit, not inside the request's transaction: PostgreSQL serialises every
committing transaction that notifies (one lock for the whole server, held through the
commit's WAL flush), so a NOTIFY in each request's transaction made the requests of every
service wait for each other's flushes. Here one background task sends the notifications,
each in a small transaction that does not wait for its flush (`repository.wake_worker`),
and the wake-ups asked for while one is being sent are answered by one more, not one each.
A wake-up lost (database away, or a crash) costs only the worker's next poll.
"""

from __future__ import annotations

import asyncio

from consentry.consent.rights import repository
from consentry.eventing.consumer import TRANSIENT_ERRORS
from consentry.eventing.db import Pool
from consentry.eventing.logs import get_logger

log = get_logger(__name__)


class WorkerWaker:
    """`wake()` after a commit the `rights` worker must act on; `close()` at shutdown."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._again = False
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # notifications sent (for tests and logs)

    def wake(self) -> None:
        """Ask for a wake-up: sent at once, or after the one being sent."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._send())
        else:
            self._again = True

    async def _send(self) -> None:
        while True:
            self._again = False
            try:
                async with self._pool.acquire() as conn:
                    await repository.wake_worker(conn)
                self.sent += 1
            except TRANSIENT_ERRORS as exc:
                log.warning("cannot wake the rights worker; it polls", error=repr(exc))
            if not self._again:
                return

    async def close(self) -> None:
        """Send what was asked for before the pool closes."""
        if self._task is not None:
            await self._task
