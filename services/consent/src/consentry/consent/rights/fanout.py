"""The `rights` worker: fans requests out to every service, erases the consent service's own
data, and publishes deadline warnings.

`rights_pass(pool, now=...)` does one round; `run_rights_worker` repeats it whenever the API
commits a request that is (or just became) in progress (NOTIFY `consentry_rights`), and every
`CONSENTRY_RIGHTS_INTERVAL_SECONDS` in any case (deadlines move with the clock alone). It
finds work across tenants only through `consentry_rights_open_requests()` (migration 0009,
SECURITY DEFINER), which returns (tenant, request) pairs; everything else runs in
tenant-scoped transactions.

**Fan-out**, for the requests in progress, tenant by tenant: one transaction takes the next
subjects of all of a tenant's requests that wait, at most `batch_size` subjects in all (the
requests with the fewest left first, so single-subject requests are not held up behind a
bulk request), and locks those requests' rows in id order (so two workers never fan out the
same subjects, and a rejection or another change waits for the transaction):

- erasure and child-data erasure: the consent service's own data of the chunk's subjects is
  erased (`consentry_erase_subjects`: current consents, ledger rows, subject rows) and, per
  subject, `ErasureRequested` (for every other service and the subprocessor notifier) and
  the consent service's own `ErasureCompleted{service: "consent"}` (what was erased) are
  queued in the outbox;
- access: `AccessRequested` per subject, with the request's export key, and the consent
  service's own part of the export (`AccessPartReady{service: "consent"}`: the subject's
  consents, their proof and its rights requests, sealed to that key, `export.py`);
- correction: nothing to send (the tenant corrects and completes the request itself).

Each transaction then records how far each of its requests got (`fanned_out`), so a worker
that dies mid-way resumes with the next subjects, and none is sent twice. A stream of
single-subject requests thus costs one transaction per tenant and round, not one per
request.

**Deadlines**: every open request whose due instant is near is classified with its restored
`Deadline`; `RequestDeadline{DUE_SOON|OVERDUE}` is published once per request, status and due
instant (`rights_deadline_notices`, in the same transaction as the outbox row).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
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
from consentry.eventing.db import Connection, Pool, create_pool
from consentry.eventing.envelope import Event
from consentry.eventing.logs import get_logger
from consentry.eventing.sealing import seal_part

DEFAULT_BATCH_SIZE = 1000
# A request of at least this many subjects may have multiplied `rights_request_subjects`:
# its first chunk asks for the table's statistics to be brought up to date first
# (`repository.subjects_added`, migration 0014).
BULK_SUBJECTS = 1000
log = get_logger(__name__)


def erased_items(counts: dict[str, int]) -> list[str]:
    """What the consent service erased for one subject, as `ErasureCompleted.erased` says it."""
    names = {"subjects": "subject", "consents": "consents", "ledger": "consent-ledger"}
    return [names[kind] for kind in ("subjects", "consents", "ledger") if counts.get(kind)]


async def fan_out_chunks(
    pool: Pool, *, tenant_id: UUID, request_ids: Sequence[UUID], batch_size: int
) -> tuple[int, list[UUID]]:
    """Fan out the next subjects of several of the tenant's requests in ONE transaction, at
    most `batch_size` subjects in all, the requests with the fewest subjects left first (a
    stream of single-subject requests costs a transaction per round, not one each, and is
    not held up behind a bulk request's chunks). Returns how many subjects went out and the
    requests that still have subjects left."""
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.lock_requests(
            conn, tenant_id=tenant_id, request_ids=sorted(set(request_ids))
        )
        active = sorted(
            (r for r in rows if r["state"] == RequestState.IN_PROGRESS),
            key=lambda r: (r["subject_count"] - r["fanned_out"], r["id"]),
        )
        budget = batch_size
        taken: dict[UUID, asyncpg.Record] = {}
        chunks: list[tuple[UUID, int, int]] = []
        left: list[UUID] = []
        for row in active:
            remaining = row["subject_count"] - row["fanned_out"]
            if remaining <= 0:
                continue
            limit = min(remaining, budget)
            if limit > 0:
                taken[row["id"]] = row
                chunks.append((row["id"], row["fanned_out"], limit))
                budget -= limit
            if limit < remaining:
                left.append(row["id"])
        if not chunks:
            return 0, left
        # Before the answers of a bulk request arrive: the tracker's lookups, and the
        # foreign-key checks of what it records, are planned from these statistics.
        added = sum(
            r["subject_count"]
            for r in taken.values()
            if r["fanned_out"] == 0 and r["subject_count"] >= BULK_SUBJECTS
        )
        if added:
            await repository.subjects_added(conn, added)
        subjects: dict[UUID, list[asyncpg.Record]] = {request_id: [] for request_id in taken}
        for subject in await repository.next_subjects_of(conn, tenant_id=tenant_id, chunks=chunks):
            subjects[subject["request_id"]].append(subject)
        now = datetime.now(UTC)
        erasing = [
            subject["subject_ref"]
            for request_id, of_request in subjects.items()
            if RequestKind(taken[request_id]["kind"]).erases
            for subject in of_request
        ]
        erased: dict[str, dict[str, int]] = {}
        if erasing:
            erased = await repository.erase_subjects(
                conn, tenant_id=tenant_id, subject_refs=list(dict.fromkeys(erasing))
            )
        queued: list[Event] = []
        for request_id, of_request in subjects.items():
            refs = [subject["subject_ref"] for subject in of_request]
            # A subject in two of these requests was erased by the first; the second
            # reports that nothing was left, as it would in a transaction of its own.
            queued.extend(await _events(conn, tenant_id, taken[request_id], refs, erased, now))
        await outbox.add_many(conn, queued)
        await repository.advance_many(
            conn,
            tenant_id=tenant_id,
            fanned_out={r: of_r[-1]["n"] for r, of_r in subjects.items() if of_r},
            now=now,
        )
        return sum(len(of_request) for of_request in subjects.values()), left


async def _events(
    conn: Connection,
    tenant_id: UUID,
    row: asyncpg.Record,
    refs: Sequence[str],
    erased: dict[str, dict[str, int]],
    now: datetime,
) -> list[Event]:
    """What the fan-out of `refs` of the request `row` queues: for an erasure, per subject
    ErasureRequested and the consent service's own ErasureCompleted (what `erased` says
    existed; taken out of it); for an access request AccessRequested and the consent
    service's sealed part; for a correction nothing."""
    request_id: UUID = row["id"]
    kind = RequestKind(row["kind"])
    queued: list[Event] = []
    if kind.erases:
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
                    erased=erased_items(erased.pop(ref, {})),
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
    return queued


async def fan_out(
    pool: Pool, *, tenant_id: UUID, request_ids: Sequence[UUID], batch_size: int
) -> int:
    """Fan out every subject left of the tenant's `request_ids`, a transaction of up to
    `batch_size` subjects at a time; return how many went out now."""
    total, pending = 0, list(request_ids)
    while pending:
        count, pending = await fan_out_chunks(
            pool, tenant_id=tenant_id, request_ids=pending, batch_size=batch_size
        )
        total += count
        if not count:  # (cannot happen while requests are left: each chunk takes one)
            break
    if total:
        log.info(
            "rights requests fanned out",
            tenant=str(tenant_id),
            requests=len(request_ids),
            subjects=total,
        )
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

    Up to `concurrency` tenants are worked on at once, each in its own transactions (each
    locks its requests' rows in id order; subject rows and outbox keys are locked in sorted
    order, so requests naming the same subjects wait for each other rather than deadlock).
    If a tenant's transaction fails, its requests are retried each on its own, so that one
    request's trouble does not hold up the others."""
    # Days are local: two days of margin cover any time zone's offset.
    horizon = now + timedelta(days=soon_days + 2)
    async with pool.acquire() as conn, conn.transaction():
        work = await repository.open_requests(conn, due_by=horizon)
    slots = asyncio.Semaphore(concurrency)
    fanning: dict[UUID, list[UUID]] = {}
    for item in work:
        if item["fan_out"]:
            fanning.setdefault(item["tenant_id"], []).append(item["request_id"])

    async def tenant_fan_out(tenant_id: UUID, request_ids: list[UUID]) -> int:
        async with slots:
            try:  # one tenant's trouble must not hold up the others
                return await fan_out(
                    pool, tenant_id=tenant_id, request_ids=request_ids, batch_size=batch_size
                )
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "rights requests' fan-out failed; each retried on its own",
                    tenant=str(tenant_id),
                    requests=len(request_ids),
                    error=repr(exc),
                )
        # One request's trouble must not hold up the others either: each on its own.
        fanned = await asyncio.gather(
            *(one_fan_out(tenant_id, request_id) for request_id in request_ids)
        )
        return sum(fanned)

    async def one_fan_out(tenant_id: UUID, request_id: UUID) -> int:
        async with slots:
            try:
                return await fan_out(
                    pool, tenant_id=tenant_id, request_ids=[request_id], batch_size=batch_size
                )
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "rights request fan-out failed; retried next round",
                    tenant=str(tenant_id),
                    request=str(request_id),
                    error=repr(exc),
                )
                return 0

    async def deadline(item: asyncpg.Record) -> None:
        tenant_id, request_id = item["tenant_id"], item["request_id"]
        async with slots:
            try:
                await check_deadline(
                    pool, tenant_id=tenant_id, request_id=request_id, now=now, soon_days=soon_days
                )
            except TRANSIENT_ERRORS as exc:
                log.warning(
                    "rights request deadline check failed; retried next round",
                    tenant=str(tenant_id),
                    request=str(request_id),
                    error=repr(exc),
                )

    fanned = sum(await asyncio.gather(*(tenant_fan_out(t, ids) for t, ids in fanning.items())))
    # No transaction for a request far from its due date.
    await asyncio.gather(*(deadline(item) for item in work if item["deadline"]))
    return fanned


async def run_rights_worker(settings: RightsWorkerSettings, stop: asyncio.Event) -> None:
    """Run `rights_pass` on every NOTIFY and every interval until `stop` is set."""
    pool = await create_pool(settings, custom_plans=True)
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
