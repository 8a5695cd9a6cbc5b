"""Group commit: concurrent captures share one transaction, each answered after its commit.

One transaction per request tops out near the database's commit rate (one WAL flush per
commit). The writer queues captures; each of `flushers` tasks takes whatever has queued up
(up to `max_batch`) and records it in one transaction with multi-row statements
(`capture.apply_captures`), one group per tenant (each under its own `consentry.tenant_id`).
Nothing waits for a batch to fill: under light load a batch is one capture, under heavy
load batches grow by themselves while the previous transaction commits.

Durability is unchanged: a caller's future resolves only after the COMMIT that holds its
capture. A capture the rules refuse fails alone inside the group (`apply_captures` returns
its Problem). If the group's transaction itself fails (a constraint, a deadlock, a lost
connection), every capture of it is retried alone in its own transaction, so one bad capture
cannot fail its neighbours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from uuid import UUID

from consentry.consent.consents.capture import Capture, CaptureOutcome, apply_captures
from consentry.consent.db import set_tenant
from consentry.eventing.db import Pool
from consentry.eventing.logs import get_logger

log = get_logger(__name__)

_Item = tuple[Capture, "asyncio.Future[CaptureOutcome]"]


class CaptureWriter:
    """Records captures in shared transactions; `await submit(capture)` after `start()`."""

    def __init__(self, pool: Pool, *, max_batch: int = 256, flushers: int = 4) -> None:
        self._pool = pool
        self._max_batch = max_batch
        self._flushers = flushers
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self.transactions = 0
        self.captures = 0

    def start(self) -> None:
        """Start the flusher tasks (inside the running event loop)."""
        self._tasks = [
            asyncio.create_task(self._flush_forever(), name=f"capture-writer-{n}")
            for n in range(self._flushers)
        ]

    async def stop(self) -> None:
        """Stop the flushers after the captures already queued are written."""
        await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def submit(self, capture: Capture) -> CaptureOutcome:
        """Record `capture`; returns after its transaction committed, or raises its Problem."""
        if not self._tasks:
            raise RuntimeError("CaptureWriter.start() was not called")
        future: asyncio.Future[CaptureOutcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((capture, future))
        # The caller may go away (client disconnect); the capture is still written.
        return await asyncio.shield(future)

    async def _flush_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                await self._flush(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _flush(self, batch: list[_Item]) -> None:
        try:
            results = await self._write(batch)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch, [exc])
                return
            log.warning("group write failed; retrying its captures alone", error=repr(exc))
            for item in batch:
                try:
                    results = await self._write([item])
                except Exception as alone:  # this capture's own failure, answered to it
                    results = [alone]
                _settle([item], results)
            return
        _settle(batch, results)

    async def _write(self, batch: Sequence[_Item]) -> list[CaptureOutcome | BaseException]:
        groups: dict[UUID, list[int]] = {}
        for position, (capture, _) in enumerate(batch):
            groups.setdefault(capture.tenant_id, []).append(position)
        results: list[CaptureOutcome | BaseException] = [RuntimeError("not written") for _ in batch]
        async with self._pool.acquire() as conn, conn.transaction():
            for tenant_id in sorted(groups):  # a fixed order of subject locks across groups
                positions = groups[tenant_id]
                await set_tenant(conn, tenant_id)
                outcomes = await apply_captures(
                    conn, tenant_id, [batch[position][0] for position in positions]
                )
                for position, outcome in zip(positions, outcomes, strict=True):
                    results[position] = outcome
        self.transactions += 1
        self.captures += len(batch)
        return results


def _settle(batch: Sequence[_Item], results: Sequence[CaptureOutcome | BaseException]) -> None:
    for (_, future), result in zip(batch, results, strict=True):
        if future.done():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
