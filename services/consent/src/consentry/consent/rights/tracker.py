"""The `rights-tracker` worker: records each service's and recipient's answer to an erasure
request and completes the request when every subject has all of them.

It is an `EventConsumer` (inbox + dead letters) over `consentry.rights.answers.v1` and
`consentry.subprocessor.v1` (and `consentry.rights.v1`: `TOPICS`) with a batch handler;
per subject of a request it records

- `ErasureCompleted{service}` of every internal service (the consent service's own too), or,
  for an access request, its `AccessPartReady{service}` (the sealed part is kept as it came),
- `RecipientsSelected` of the subprocessor notifier (which recipients must be told; possibly
  none), and each recipient's `DeliveryAcknowledged` or `DeliveryDeadLettered` (escalated).

A subject is **done** when every service the request expects has reported (fixed at
receipt, `CONSENTRY_ERASURE_SERVICES`) and, if the request awaits recipients
(`CONSENTRY_ERASURE_AWAIT_RECIPIENTS`), its recipients were selected and each of them
acknowledged or was dead-lettered. A request is **complete** when all its subjects are
done: then its completion certificate is signed with the tenant's receipt key and
`RequestClosed` is queued, in the same transaction.

Bookkeeping scales with the events, not the subjects: a batch is applied with a handful of
multi-row statements per tenant (insert the answers, ignoring repeats; add the new ones to
per-request counters; mark the touched subjects done when they are; add those to the
request's count), never a scan of a request's subjects. Events for unknown requests or
subjects (another deployment's, or consent withdrawals without a request) are ignored.
Answers may arrive in any order (a recipient's acknowledgement before its selection, say);
a recipient's first resolution is kept.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from consentry.consent.db import set_tenant
from consentry.consent.rights import repository, service
from consentry.consent.rights.certificate import signing_key_in
from consentry.consent.sealing import Sealer
from consentry.consent.settings import RightsTrackerSettings
from consentry.eventing import catalogue, kafka, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent, field_time
from consentry.eventing.logs import get_logger
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors.v1 import subprocessors_pb2

log = get_logger(__name__)
# The events the tracker records; the requests themselves and everything else on its topics
# are passed over unread.
ANSWERS = (
    catalogue.ERASURE_COMPLETED,
    catalogue.ACCESS_PART_READY,
    catalogue.RECIPIENTS_SELECTED,
    catalogue.DELIVERY_ACKNOWLEDGED,
    catalogue.DELIVERY_DEAD_LETTERED,
)
# The answers' topics; and `consentry.rights.v1`, where the services published their answers
# before ADR 0014 (those still in an outbox or on the topic at an upgrade count as well):
# its requests are passed over unread.
TOPICS = (topics.RIGHTS_ANSWERS, topics.SUBPROCESSOR, topics.RIGHTS)
ACKNOWLEDGED = "acknowledged"
DEAD_LETTERED = "dead-lettered"

# Every statement finds the batch's subjects (and _MARK_DONE their requests) one by one: a
# LATERAL subquery with LIMIT is always a nested loop of index lookups. A plain join to
# rights_request_subjects let PostgreSQL hash all the tenant's subjects for each batch when
# it judged that cheaper (at 20,000 subjects and batches of 500 answers it did: 5 million
# rows read per 100,000 answers). The two that change a subject's row (_MARK_SELECTED,
# _MARK_DONE) are written as an upsert of rows that always exist: PostgreSQL then finds
# each row through the primary key (the conflict), where an UPDATE ... FROM joined to the
# batch could again scan the table, and did (a plan that read 250,000 rows for 500).
# Statistics still matter for the lookups themselves: see migration 0014.
#
# `_SUBJECT`: the answer's subject (t.r, t.s) as `k`, that lookup; no row for a subject the
# request does not cover (an unknown request's), so its answer is passed over.
_SUBJECT = """CROSS JOIN LATERAL (
    SELECT subj.n, subj.recipients_selected_at, subj.done_at
    FROM rights_request_subjects AS subj
    WHERE subj.tenant_id = $1 AND subj.request_id = t.r AND subj.subject_ref = t.s LIMIT 1
) AS k"""
_RECORD_COMPLETIONS = f"""
INSERT INTO rights_subject_services (tenant_id, request_id, subject_ref, service, completed_at,
                                     erased, sealed_part)
SELECT $1, t.r, t.s, t.sv, t.at, ARRAY(SELECT jsonb_array_elements_text(t.e)), t.p
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[], $6::jsonb[], $7::bytea[])
         AS t(r, s, sv, at, e, p)
{_SUBJECT}
ORDER BY t.r, t.s, t.sv
ON CONFLICT DO NOTHING
RETURNING request_id, subject_ref, service, completed_at, erased
"""  # noqa: S608 - constant fragments
_ADD_SERVICE_TOTALS = """
INSERT INTO rights_request_services AS a (tenant_id, request_id, service, subjects, erased,
                                          first_completed_at, last_completed_at)
SELECT $1, t.r, t.sv, t.n, ARRAY(SELECT jsonb_array_elements_text(t.e)), t.f, t.l
FROM unnest($2::uuid[], $3::text[], $4::int[], $5::jsonb[], $6::timestamptz[],
            $7::timestamptz[]) AS t(r, sv, n, e, f, l)
ORDER BY t.r, t.sv
ON CONFLICT (tenant_id, request_id, service) DO UPDATE SET
    subjects = a.subjects + EXCLUDED.subjects,
    erased = ARRAY(SELECT DISTINCT x FROM unnest(a.erased || EXCLUDED.erased) AS x ORDER BY x),
    first_completed_at = least(a.first_completed_at, EXCLUDED.first_completed_at),
    last_completed_at = greatest(a.last_completed_at, EXCLUDED.last_completed_at)
"""
_MARK_SELECTED = f"""
INSERT INTO rights_request_subjects AS x (tenant_id, request_id, n, subject_ref,
                                          recipients_selected_at)
SELECT $1, t.r, k.n, t.s, t.at
FROM unnest($2::uuid[], $3::text[], $4::timestamptz[]) AS t(r, s, at)
{_SUBJECT}
ORDER BY t.r, k.n
ON CONFLICT (tenant_id, request_id, n) DO UPDATE
    SET recipients_selected_at = EXCLUDED.recipients_selected_at
    WHERE x.recipients_selected_at IS NULL
RETURNING x.request_id, x.subject_ref
"""  # noqa: S608 - constant fragments
_SELECT_RECIPIENTS = f"""
INSERT INTO rights_subject_recipients AS y (tenant_id, request_id, subject_ref, recipient_id,
                                            state, selected_at)
SELECT $1, t.r, t.s, t.rc, 'pending', t.at
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::timestamptz[]) AS t(r, s, rc, at)
{_SUBJECT}
ORDER BY t.r, t.s, t.rc
ON CONFLICT (tenant_id, request_id, subject_ref, recipient_id) DO UPDATE
    SET selected_at = EXCLUDED.selected_at
    WHERE y.selected_at IS NULL
RETURNING request_id, subject_ref, recipient_id
"""  # noqa: S608 - constant fragments
_RESOLVE_RECIPIENTS = f"""
INSERT INTO rights_subject_recipients AS y (tenant_id, request_id, subject_ref, recipient_id,
                                            state, resolved_at, webhook_id, first_sent_at,
                                            attempts, last_error)
SELECT $1, t.r, t.s, t.rc, t.st, t.at, t.w, t.f, t.a, t.e
FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::text[],
            $8::timestamptz[], $9::int[], $10::text[]) AS t(r, s, rc, st, at, w, f, a, e)
{_SUBJECT}
ORDER BY t.r, t.s, t.rc
ON CONFLICT (tenant_id, request_id, subject_ref, recipient_id) DO UPDATE SET
    state = EXCLUDED.state, resolved_at = EXCLUDED.resolved_at,
    webhook_id = EXCLUDED.webhook_id, first_sent_at = EXCLUDED.first_sent_at,
    attempts = EXCLUDED.attempts, last_error = EXCLUDED.last_error
    WHERE y.state = 'pending'
RETURNING request_id, subject_ref, recipient_id, state, resolved_at
"""  # noqa: S608 - constant fragments
_ADD_RECIPIENT_TOTALS = """
INSERT INTO rights_request_recipients AS a (tenant_id, request_id, recipient_id, selected,
                                            acknowledged, dead_lettered, first_acknowledged_at,
                                            last_acknowledged_at, last_dead_lettered_at)
SELECT $1, t.r, t.rc, t.sel, t.ack, t.dead, t.fa, t.la, t.ld
FROM unnest($2::uuid[], $3::text[], $4::int[], $5::int[], $6::int[], $7::timestamptz[],
            $8::timestamptz[], $9::timestamptz[]) AS t(r, rc, sel, ack, dead, fa, la, ld)
ORDER BY t.r, t.rc
ON CONFLICT (tenant_id, request_id, recipient_id) DO UPDATE SET
    selected = a.selected + EXCLUDED.selected,
    acknowledged = a.acknowledged + EXCLUDED.acknowledged,
    dead_lettered = a.dead_lettered + EXCLUDED.dead_lettered,
    first_acknowledged_at = least(a.first_acknowledged_at, EXCLUDED.first_acknowledged_at),
    last_acknowledged_at = greatest(a.last_acknowledged_at, EXCLUDED.last_acknowledged_at),
    last_dead_lettered_at = greatest(a.last_dead_lettered_at, EXCLUDED.last_dead_lettered_at)
"""
# The touched subjects that now have every answer their request waits for (index lookups
# per touched subject: its service reports and its pending recipients). Both are counted in
# scalar subqueries: PostgreSQL makes a NOT EXISTS an anti-join, and hashed all of
# rights_subject_recipients for it whenever that looked cheaper (110 scans, 7.9 million
# rows, in one 100,000-subject bench).
_MARK_DONE = f"""
INSERT INTO rights_request_subjects AS x (tenant_id, request_id, n, subject_ref, done_at)
SELECT $1, t.r, k.n, t.s, $4
FROM unnest($2::uuid[], $3::text[]) AS t(r, s)
CROSS JOIN LATERAL (
    SELECT expected_services, await_recipients FROM rights_requests
    WHERE tenant_id = $1 AND id = t.r LIMIT 1
) AS q
{_SUBJECT}
WHERE k.done_at IS NULL
  AND (SELECT count(*) FROM rights_subject_services AS v
       WHERE v.tenant_id = $1 AND v.request_id = t.r AND v.subject_ref = t.s
         AND v.service = ANY(q.expected_services)) = cardinality(q.expected_services)
  AND (NOT q.await_recipients OR (k.recipients_selected_at IS NOT NULL AND (
       SELECT count(*) FROM rights_subject_recipients AS y
       WHERE y.tenant_id = $1 AND y.request_id = t.r AND y.subject_ref = t.s
         AND y.state = 'pending') = 0))
ORDER BY t.r, k.n
ON CONFLICT (tenant_id, request_id, n) DO UPDATE SET done_at = EXCLUDED.done_at
    WHERE x.done_at IS NULL
RETURNING x.request_id
"""  # noqa: S608 - constant fragments
# The requests' counters live in their own rows (migration 0013): the `rights` worker holds
# a request's row locked while it fans out a chunk, and these updates need not wait for it.
_ADD_REQUEST_TOTALS = """
WITH added AS (
    INSERT INTO rights_request_progress AS p (tenant_id, request_id, subjects_done,
                                              subjects_with_recipients)
    SELECT $1, t.r, t.done, t.sel
    FROM unnest($2::uuid[], $3::int[], $4::int[]) AS t(r, done, sel)
    ORDER BY t.r
    ON CONFLICT (tenant_id, request_id) DO UPDATE SET
        subjects_done = p.subjects_done + EXCLUDED.subjects_done,
        subjects_with_recipients = p.subjects_with_recipients
                                   + EXCLUDED.subjects_with_recipients,
        updated_at = now()
    RETURNING p.request_id, p.subjects_done
)
SELECT q.id, a.subjects_done = q.subject_count AND q.state = 'in-progress' AS complete
FROM added AS a JOIN rights_requests AS q ON q.tenant_id = $1 AND q.id = a.request_id
"""


@dataclass(frozen=True, slots=True)
class Completion:
    """An internal service erased a subject of a request, or delivered its export part."""

    request_id: UUID
    subject_ref: str
    service: str
    completed_at: datetime
    erased: tuple[str, ...] = ()
    sealed_part: bytes | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """The recipients to tell about a subject of a request (possibly none)."""

    request_id: UUID
    subject_ref: str
    recipients: tuple[str, ...]
    selected_at: datetime


@dataclass(frozen=True, slots=True)
class Resolution:
    """A recipient acknowledged a notice, or it was dead-lettered."""

    request_id: UUID
    subject_ref: str
    recipient_id: str
    state: str
    at: datetime
    webhook_id: str
    first_sent_at: datetime | None
    attempts: int
    last_error: str


@dataclass
class _ServiceTotal:
    first: datetime
    last: datetime
    subjects: int = 0
    erased: set[str] = field(default_factory=set)


@dataclass
class _TenantBatch:
    completions: dict[tuple[UUID, str, str], Completion] = field(default_factory=dict)
    selections: dict[tuple[UUID, str], Selection] = field(default_factory=dict)
    resolutions: dict[tuple[UUID, str, str], Resolution] = field(default_factory=dict)


def _request_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise PoisonMessage("invalid-request-id", "request_id is not a UUID") from None


def _first_sent(
    message: subprocessors_pb2.DeliveryAcknowledged | subprocessors_pb2.DeliveryDeadLettered,
) -> datetime | None:
    return field_time(message, "first_sent_at", None)


def _keep_resolution(batch: _TenantBatch, resolution: Resolution) -> None:
    """One resolution per recipient and subject; an acknowledgement beats a dead letter."""
    key = (resolution.request_id, resolution.subject_ref, resolution.recipient_id)
    kept = batch.resolutions.get(key)
    if kept is None or (kept.state == DEAD_LETTERED and resolution.state == ACKNOWLEDGED):
        batch.resolutions[key] = resolution


def _parse(events: Sequence[ReceivedEvent]) -> dict[UUID, _TenantBatch]:
    """The answers in `events`, per tenant, each (request, subject, service|recipient) once."""
    batches: dict[UUID, _TenantBatch] = defaultdict(_TenantBatch)
    for event in events:
        message = event.message
        tenant = UUID(event.tenant_id)
        if isinstance(message, rights_pb2.ErasureCompleted):
            request_id = _request_id(message.request_id)
            completion = Completion(
                request_id,
                message.subject_ref,
                message.service,
                field_time(message, "completed_at", event.time),
                tuple(message.erased),
            )
            key = (request_id, completion.subject_ref, completion.service)
            batches[tenant].completions.setdefault(key, completion)
        elif isinstance(message, rights_pb2.AccessPartReady):
            request_id = _request_id(message.request_id)
            completion = Completion(
                request_id,
                message.subject_ref,
                message.service,
                field_time(message, "ready_at", event.time),
                sealed_part=message.sealed_part,
            )
            key = (request_id, completion.subject_ref, completion.service)
            batches[tenant].completions.setdefault(key, completion)
        elif isinstance(message, subprocessors_pb2.RecipientsSelected) and message.request_id:
            request_id = _request_id(message.request_id)
            selected_at = field_time(message, "selected_at", event.time)
            batch = batches[tenant]
            previous = batch.selections.get((request_id, message.subject_ref))
            recipients = tuple(dict.fromkeys(message.recipient_ids))
            if previous is not None:  # two selections in one batch: their union
                recipients = tuple(dict.fromkeys((*previous.recipients, *recipients)))
                selected_at = min(previous.selected_at, selected_at)
            batch.selections[(request_id, message.subject_ref)] = Selection(
                request_id, message.subject_ref, recipients, selected_at
            )
        elif isinstance(message, subprocessors_pb2.DeliveryAcknowledged) and message.request_id:
            resolution = Resolution(
                _request_id(message.request_id),
                message.subject_ref,
                message.recipient_id,
                ACKNOWLEDGED,
                field_time(message, "acknowledged_at", event.time),
                message.webhook_id,
                _first_sent(message),
                message.attempts,
                "",
            )
            _keep_resolution(batches[tenant], resolution)
        elif isinstance(message, subprocessors_pb2.DeliveryDeadLettered) and message.request_id:
            resolution = Resolution(
                _request_id(message.request_id),
                message.subject_ref,
                message.recipient_id,
                DEAD_LETTERED,
                field_time(message, "dead_lettered_at", event.time),
                message.webhook_id,
                _first_sent(message),
                message.attempts,
                message.last_error[:500],
            )
            _keep_resolution(batches[tenant], resolution)
    return batches


class RightsTracker:
    """Applies answers to rights requests in the consumer's transaction (see module doc)."""

    def __init__(self, sealer: Sealer) -> None:
        self._sealer = sealer
        self.completed: list[UUID] = []  # requests this tracker completed (for tests, logs)

    async def handle(self, conn: Connection, event: ReceivedEvent) -> None:
        """The per-record path: one event."""
        await self.apply(conn, [event])

    async def apply(self, conn: Connection, events: Sequence[ReceivedEvent]) -> None:
        """The batch path: every event of a partition batch at once, tenant by tenant."""
        batches = _parse(events)
        for tenant_id in sorted(batches):
            batch = batches[tenant_id]
            if batch.completions or batch.selections or batch.resolutions:
                await set_tenant(conn, tenant_id)
                await self._apply_tenant(conn, tenant_id, batch)

    async def _apply_tenant(self, conn: Connection, tenant_id: UUID, batch: _TenantBatch) -> None:
        now = datetime.now(UTC)
        touched: set[tuple[UUID, str]] = set()
        newly_selected: dict[UUID, int] = defaultdict(int)
        if batch.completions:
            touched |= await self._record_completions(conn, tenant_id, batch.completions)
        if batch.selections:
            touched |= await self._record_selections(
                conn, tenant_id, batch.selections, newly_selected
            )
        if batch.resolutions:
            touched |= await self._record_resolutions(conn, tenant_id, batch.resolutions)
        done: dict[UUID, int] = defaultdict(int)
        if touched:
            ordered = sorted(touched)
            rows = await conn.fetch(
                _MARK_DONE,
                tenant_id,
                [request for request, _ in ordered],
                [subject for _, subject in ordered],
                now,
            )
            for row in rows:
                done[row["request_id"]] += 1
        requests = sorted(done.keys() | newly_selected.keys())
        if not requests:
            return
        rows = await conn.fetch(
            _ADD_REQUEST_TOTALS,
            tenant_id,
            requests,
            [done.get(r, 0) for r in requests],
            [newly_selected.get(r, 0) for r in requests],
        )
        await self._complete(conn, tenant_id, [row["id"] for row in rows if row["complete"]], now)

    async def _record_completions(
        self,
        conn: Connection,
        tenant_id: UUID,
        completions: dict[tuple[UUID, str, str], Completion],
    ) -> set[tuple[UUID, str]]:
        items = [completions[key] for key in sorted(completions)]
        rows = await conn.fetch(
            _RECORD_COMPLETIONS,
            tenant_id,
            [c.request_id for c in items],
            [c.subject_ref for c in items],
            [c.service for c in items],
            [c.completed_at for c in items],
            [json.dumps(list(c.erased)) for c in items],
            [c.sealed_part for c in items],
        )
        totals: dict[tuple[UUID, str], _ServiceTotal] = {}
        for row in rows:
            key = (row["request_id"], row["service"])
            at: datetime = row["completed_at"]
            total = totals.setdefault(key, _ServiceTotal(first=at, last=at))
            total.subjects += 1
            total.erased.update(row["erased"])
            total.first, total.last = min(total.first, at), max(total.last, at)
        if totals:
            keys = sorted(totals)
            await conn.execute(
                _ADD_SERVICE_TOTALS,
                tenant_id,
                [r for r, _ in keys],
                [s for _, s in keys],
                [totals[k].subjects for k in keys],
                [json.dumps(sorted(totals[k].erased)) for k in keys],
                [totals[k].first for k in keys],
                [totals[k].last for k in keys],
            )
        return {(row["request_id"], row["subject_ref"]) for row in rows}

    async def _record_selections(
        self,
        conn: Connection,
        tenant_id: UUID,
        selections: dict[tuple[UUID, str], Selection],
        newly_selected: dict[UUID, int],
    ) -> set[tuple[UUID, str]]:
        items = [selections[key] for key in sorted(selections)]
        marked = await conn.fetch(
            _MARK_SELECTED,
            tenant_id,
            [s.request_id for s in items],
            [s.subject_ref for s in items],
            [s.selected_at for s in items],
        )
        for row in marked:
            newly_selected[row["request_id"]] += 1
        pairs = [(s, recipient) for s in items for recipient in s.recipients]
        counts: dict[tuple[UUID, str], int] = defaultdict(int)
        if pairs:
            rows = await conn.fetch(
                _SELECT_RECIPIENTS,
                tenant_id,
                [s.request_id for s, _ in pairs],
                [s.subject_ref for s, _ in pairs],
                [recipient for _, recipient in pairs],
                [s.selected_at for s, _ in pairs],
            )
            for row in rows:
                counts[(row["request_id"], row["recipient_id"])] += 1
        await self._add_recipient_totals(conn, tenant_id, selected=counts)
        return {(row["request_id"], row["subject_ref"]) for row in marked}

    async def _record_resolutions(
        self,
        conn: Connection,
        tenant_id: UUID,
        resolutions: dict[tuple[UUID, str, str], Resolution],
    ) -> set[tuple[UUID, str]]:
        items = [resolutions[key] for key in sorted(resolutions)]
        rows = await conn.fetch(
            _RESOLVE_RECIPIENTS,
            tenant_id,
            [r.request_id for r in items],
            [r.subject_ref for r in items],
            [r.recipient_id for r in items],
            [r.state for r in items],
            [r.at for r in items],
            [r.webhook_id or None for r in items],
            [r.first_sent_at for r in items],
            [r.attempts for r in items],
            [r.last_error or None for r in items],
        )
        acknowledged: dict[tuple[UUID, str], list[datetime]] = defaultdict(list)
        dead: dict[tuple[UUID, str], list[datetime]] = defaultdict(list)
        for row in rows:
            key = (row["request_id"], row["recipient_id"])
            (acknowledged if row["state"] == ACKNOWLEDGED else dead)[key].append(row["resolved_at"])
        await self._add_recipient_totals(conn, tenant_id, acknowledged=acknowledged, dead=dead)
        return {(row["request_id"], row["subject_ref"]) for row in rows}

    async def _add_recipient_totals(
        self,
        conn: Connection,
        tenant_id: UUID,
        *,
        selected: dict[tuple[UUID, str], int] | None = None,
        acknowledged: dict[tuple[UUID, str], list[datetime]] | None = None,
        dead: dict[tuple[UUID, str], list[datetime]] | None = None,
    ) -> None:
        selected, acknowledged, dead = selected or {}, acknowledged or {}, dead or {}
        keys = sorted(selected.keys() | acknowledged.keys() | dead.keys())
        if not keys:
            return
        await conn.execute(
            _ADD_RECIPIENT_TOTALS,
            tenant_id,
            [r for r, _ in keys],
            [rc for _, rc in keys],
            [selected.get(k, 0) for k in keys],
            [len(acknowledged.get(k, ())) for k in keys],
            [len(dead.get(k, ())) for k in keys],
            [min(acknowledged[k]) if acknowledged.get(k) else None for k in keys],
            [max(acknowledged[k]) if acknowledged.get(k) else None for k in keys],
            [max(dead[k]) if dead.get(k) else None for k in keys],
        )

    async def _complete(
        self, conn: Connection, tenant_id: UUID, request_ids: list[UUID], now: datetime
    ) -> None:
        """Complete the requests that have every answer now, together: locked in id order,
        signed with the tenant's key read once, stored and announced in a few statements."""
        if not request_ids:
            return
        rows = await repository.lock_requests(conn, tenant_id=tenant_id, request_ids=request_ids)
        rows = [row for row in rows if row["state"] == "in-progress"]
        if not rows:
            return
        key = await signing_key_in(conn, tenant_id, self._sealer)
        await service.complete_many(conn, tenant_id=tenant_id, rows=rows, key=key, now=now)
        for row in rows:
            self.completed.append(row["id"])
            log.info("rights request completed", tenant=str(tenant_id), request=str(row["id"]))


async def run_rights_tracker(settings: RightsTrackerSettings, stop: asyncio.Event) -> None:
    """Track answers to rights requests until `stop` is set."""
    pool = await create_pool(settings, custom_plans=True)
    group = settings.rights_tracker_group_id
    producer = kafka.producer(settings, f"-{group}-dlq")
    consumer = kafka.consumer(settings, group, *TOPICS)
    await producer.start()
    await consumer.start()
    try:
        tracker = RightsTracker(settings.sealer())
        await EventConsumer(
            group,
            consumer,
            producer,
            pool,
            tracker.handle,
            batch_handler=tracker.apply,
            accepts=ANSWERS,
            max_records=settings.rights_tracker_max_records,
        ).run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
