"""The `rights` worker: fans requests out to every service, erases the consent service's own
data, and publishes deadline warnings.

`rights_pass(pool, now=...)` does one round; `run_rights_worker` repeats it whenever the API
commits a request that is (or just became) in progress (NOTIFY `consentry_rights`), and every
`CONSENTRY_RIGHTS_INTERVAL_SECONDS` in any case (deadlines move with the clock alone). It
finds work across tenants only through `consentry_rights_open_requests()` (migration 0009,
SECURITY DEFINER), which returns (tenant, request) pairs; everything else runs in
tenant-scoped transactions.

**Fan-out**, for a request in progress, in chunks of `batch_size` subjects, one transaction
per chunk that locks the request row (so two workers never fan out the same chunk, and a
rejection or another change waits for the chunk):

- erasure and child-data erasure: the consent service's own data of the chunk's subjects is
  erased (`consentry_erase_subjects`: current consents, ledger rows, subject rows) and, per
  subject, `ErasureRequested` (for every other service and the subprocessor notifier) and
  the consent service's own `ErasureCompleted{service: "consent"}` (what was erased) are
  queued in the outbox;
- access: `AccessRequested` per subject, with the request's export key, and the consent
  service's own part of the export (`AccessPartReady{service: "consent"}`: the subject's
  consents, their proof and its rights requests, sealed to that key, `export.py`);
- correction: nothing to send (the tenant corrects and completes the request itself).

The chunk then records how far the fan-out got (`fanned_out`), so a worker that dies
mid-way resumes with the next chunk, and none is sent twice.

**Deadlines**: every open request whose due instant is near is classified with its restored
`Deadline`; `RequestDeadline{DUE_SOON|OVERDUE}` is published once per request, status and due
instant (`rights_deadline_notices`, in the same transaction as the outbox row).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg

from consentry.consent.db import tenant_transaction
from consentry.consent.rights import events, export, repository
from consentry.consent.rights.deadlines import DUE_SOON_DAYS, DeadlineStatus
from consentry.consent.rights.models import Requester, RequestKind, RequestState
from consentry.consent.settings import RightsWorkerSettings
from consentry.eventing import outbox
from consentry.eventing.consumer import TRANSIENT_ERRORS
from consentry.eventing.db import Pool, create_pool
from consentry.eventing.envelope import Event
from consentry.eventing.logs import get_logger
from consentry.eventing.sealing import seal_part

DEFAULT_BATCH_SIZE = 1000
log = get_logger(__name__)


def erased_items(counts: dict[str, int]) -> list[str]:
    """What the consent service erased for one subject, as `ErasureCompleted.erased` says it."""
    names = {"subjects": "subject", "consents": "consents", "ledger": "consent-ledger"}
    return [names[kind] for kind in ("subjects", "consents", "ledger") if counts.get(kind)]


async def fan_out_chunk(pool: Pool, *, tenant_id: UUID, request_id: UUID, batch_size: int) -> int:
    """Fan out the request's next chunk of subjects; return how many (0: nothing left)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get_request(
            conn, tenant_id=tenant_id, request_id=request_id, lock=True
        )
        if row is None or row["state"] != RequestState.IN_PROGRESS:
            return 0
        subjects = await repository.next_subjects(
            conn,
            tenant_id=tenant_id,
            request_id=request_id,
            after=row["fanned_out"],
            limit=batch_size,
        )
        if not subjects:
            return 0
        now = datetime.now(UTC)
        kind = RequestKind(row["kind"])
        refs = [subject["subject_ref"] for subject in subjects]
        queued: list[Event] = []
        if kind.erases:
            erased = await repository.erase_subjects(conn, tenant_id=tenant_id, subject_refs=refs)
            for ref in refs:
                queued.append(
                    events.erasure_requested(
                        tenant_id=tenant_id,
                        subject_ref=ref,
                        request_id=request_id,
                        kind=kind,
                        requester=Requester(row["requester"]),
                        requested_at=row["received_at"],
                        due_at=row["due_at"],
                    )
                )
                queued.append(
                    events.erasure_completed(
                        tenant_id=tenant_id,
                        subject_ref=ref,
                        request_id=request_id,
                        completed_at=now,
                        erased=erased_items(erased.get(ref, {})),
                    )
                )
        elif kind is RequestKind.ACCESS:
            public_key: bytes = row["export_public_key"]
            parts = await export.consent_parts(conn, tenant_id=tenant_id, subject_refs=refs)
            for ref in refs:
                queued.append(
                    events.access_requested(
                        tenant_id=tenant_id,
                        subject_ref=ref,
                        request_id=request_id,
                        requested_at=row["received_at"],
                        export_public_key=public_key,
                    )
                )
                sealed = seal_part(
                    public_key,
                    parts[ref],
                    tenant_id=tenant_id,
                    request_id=request_id,
                    service=events.SERVICE,
                )
                queued.append(
                    events.access_part_ready(
                        tenant_id=tenant_id,
                        subject_ref=ref,
                        request_id=request_id,
                        sealed_part=sealed,
                        ready_at=now,
                    )
                )
        await outbox.add_many(conn, queued)
        await repository.advance(
            conn,
            tenant_id=tenant_id,
            request_id=request_id,
            fanned_out=subjects[-1]["n"],
            now=now,
        )
        return len(subjects)


async def fan_out(pool: Pool, *, tenant_id: UUID, request_id: UUID, batch_size: int) -> int:
    """Fan out every subject left, chunk by chunk; return how many went out now."""
    total = 0
    while True:
        chunk = await fan_out_chunk(
            pool, tenant_id=tenant_id, request_id=request_id, batch_size=batch_size
        )
        total += chunk
        # A short chunk was the last: no transaction to find out that nothing is left.
        if chunk < batch_size:
            break
    if total:
        log.info("rights request fanned out", tenant=str(tenant_id), request=str(request_id))
    return total


async def check_deadline(
    pool: Pool, *, tenant_id: UUID, request_id: UUID, now: datetime, soon_days: int
) -> DeadlineStatus | None:
    """Publish the request's deadline warning if it is due soon or overdue and was not
    warned about for this status and due instant yet; return the status published."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get_request(conn, tenant_id=tenant_id, request_id=request_id)
        if row is None or row["closed_at"] is not None:
            return None
        deadline = repository.deadline_of(row)
        status = deadline.status(now, soon_days)
        if status not in (DeadlineStatus.DUE_SOON, DeadlineStatus.OVERDUE):
            return None
        fresh = await repository.record_notice(
            conn,
            tenant_id=tenant_id,
            request_id=request_id,
            status=status.value,
            due_at=deadline.due_at,
        )
        if not fresh:
            return None
        await outbox.add(
            conn,
            events.request_deadline(
                tenant_id=tenant_id,
                request_id=request_id,
                kind=RequestKind(row["kind"]),
                status=status,
                due_at=deadline.due_at,
            ),
        )
        log.info(
            "rights request deadline",
            tenant=str(tenant_id),
            request=str(request_id),
            status=status.value,
        )
        return status


async def rights_pass(
    pool: Pool,
    *,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    soon_days: int = DUE_SOON_DAYS,
    concurrency: int = 1,
) -> int:
    """One round: fan out what waits, then warn about deadlines; return subjects fanned out.

    Up to `concurrency` requests are worked on at once, each in its own transactions (every
    chunk locks its own request row; subject rows and outbox keys are locked in sorted
    order, so requests naming the same subjects wait for each other rather than deadlock):
    many small requests are not held up behind each other's commits."""
    # Days are local: two days of margin cover any time zone's offset.
    horizon = now + timedelta(days=soon_days + 2)
    async with pool.acquire() as conn, conn.transaction():
        work = await repository.open_requests(conn, due_by=horizon)
    slots = asyncio.Semaphore(concurrency)

    async def one(item: asyncpg.Record) -> int:
        tenant_id, request_id = item["tenant_id"], item["request_id"]
        fanned = 0
        async with slots:
            try:  # one request's trouble must not hold up the others
                if item["fan_out"]:
                    fanned = await fan_out(
                        pool, tenant_id=tenant_id, request_id=request_id, batch_size=batch_size
                    )
                if item["deadline"]:  # no transaction for a request far from its due date
                    await check_deadline(
                        pool,
                        tenant_id=tenant_id,
                        request_id=request_id,
                        now=now,
                        soon_days=soon_days,
                    )
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "rights request work failed; retried next round",
                    tenant=str(tenant_id),
                    request=str(request_id),
                    error=repr(exc),
                )
        return fanned

    return sum(await asyncio.gather(*(one(item) for item in work)))


async def run_rights_worker(settings: RightsWorkerSettings, stop: asyncio.Event) -> None:
    """Run `rights_pass` on every NOTIFY and every interval until `stop` is set."""
    pool = await create_pool(settings)
    wake = asyncio.Event()
    listener: asyncpg.Connection | None = None
    try:
        while not stop.is_set():
            if listener is None or listener.is_closed():
                listener = await _listen(settings.database_url, wake)
            wake.clear()
            try:
                await rights_pass(
                    pool,
                    now=datetime.now(UTC),
                    batch_size=settings.rights_batch_size,
                    soon_days=settings.rights_due_soon_days,
                    concurrency=settings.rights_concurrency,
                )
            except TRANSIENT_ERRORS as exc:
                log.warning("rights pass failed; retrying", error=repr(exc))
            await _wait(stop, wake, settings.rights_interval_seconds)
    finally:
        if listener is not None:
            with contextlib.suppress(*TRANSIENT_ERRORS):
                await listener.close(timeout=5)
        await pool.close()


async def _listen(dsn: str, wake: asyncio.Event) -> asyncpg.Connection | None:
    """A connection listening on the worker's channel, or None (then the worker polls)."""
    try:
        conn = await asyncpg.connect(dsn)
        await conn.add_listener(repository.CHANNEL, lambda *_: wake.set())
    except TRANSIENT_ERRORS as exc:
        log.warning("rights worker cannot listen; polling", error=repr(exc))
        return None
    return conn


async def _wait(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
