"""SQL for rights requests. Functions receive an open connection scoped to the tenant (RLS),
except `open_requests`, which asks the SECURITY DEFINER function of migrations 0009 and 0011."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from consentry.consent.rights.deadlines import Deadline, Extension, Pause
from consentry.eventing.db import Connection

# Wakes the `rights` worker (the worker also polls). Sent after the request's transaction
# committed, in a transaction of its own that does not wait for its commit to be flushed:
# PostgreSQL serialises every committing transaction that notifies (one lock for the whole
# server, held through the commit's WAL flush), and losing a wake-up in a crash costs only
# the worker's next poll.
CHANNEL = "consentry_rights"
_WAKE = """
BEGIN;
SET LOCAL synchronous_commit = off;
SELECT pg_notify('consentry_rights', '');
COMMIT;
"""

# The columns a request is read with (`get_request`, and `insert_request` returns them); the
# tracker's counters are kept apart (rights_request_progress, migration 0013).
_COLUMNS = """
id, kind, requester, state, subject_count, note_sealed, reason, expected_services,
await_recipients, received_at, timezone, holiday_country, roll_forward, pauses::text AS pauses,
extension_months, extension_reason, extension_notice_sent_at, extended_at, closed_at, due_at,
verified_at, started_at, fanned_out, fanned_out_at, export_public_key, certificate,
coalesce((SELECT p.subjects_done FROM rights_request_progress AS p
          WHERE p.tenant_id = rights_requests.tenant_id AND p.request_id = rights_requests.id),
         0) AS subjects_done,
coalesce((SELECT p.subjects_with_recipients FROM rights_request_progress AS p
          WHERE p.tenant_id = rights_requests.tenant_id AND p.request_id = rights_requests.id),
         0) AS subjects_with_recipients
"""
# A request and its subjects in one statement, numbered in the order given (COPY is not
# allowed into a table under row-level security); the subjects' foreign key is checked at
# the statement's end, when the request is there.
_INSERT = f"""
WITH request AS (
    INSERT INTO rights_requests (
        tenant_id, id, kind, requester, state, subject_count, note_sealed, expected_services,
        await_recipients, received_at, timezone, holiday_country, roll_forward, pauses, due_at,
        verified_at, started_at, export_public_key, export_key_sealed)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14::jsonb, $15, $16, $17,
            $18, $19)
    RETURNING {_COLUMNS}
), subjects AS (
    INSERT INTO rights_request_subjects (tenant_id, request_id, n, subject_ref)
    SELECT $1, $2, t.n, t.ref FROM unnest($20::text[]) WITH ORDINALITY AS t(ref, n)
)
SELECT * FROM request
"""  # noqa: S608 - constant fragments
_GET = f"SELECT {_COLUMNS} FROM rights_requests WHERE tenant_id = $1 AND id = $2\n"  # noqa: S608
# NO KEY UPDATE: serialises changes of the request, yet lets foreign-key checks of its
# bookkeeping rows (FOR KEY SHARE) through.
_LOCK = _GET + "FOR NO KEY UPDATE"
_SAVE = """
UPDATE rights_requests SET
    state = $3, pauses = $4::jsonb, extension_months = $5, extension_reason = $6,
    extension_notice_sent_at = $7, extended_at = $8, closed_at = $9, due_at = $10,
    reason = coalesce($11, reason), verified_at = coalesce($12, verified_at),
    started_at = coalesce($13, started_at), certificate = coalesce($14, certificate),
    updated_at = now()
WHERE tenant_id = $1 AND id = $2
"""
_FIRST_SUBJECT = """
SELECT subject_ref FROM rights_request_subjects WHERE tenant_id = $1 AND request_id = $2 AND n = 1
"""
# The services' and recipients' reports of one or several requests (the tracker completes a
# batch's requests together), each row naming its request; and per request the SHA-256 over
# its subject references, sorted, one per line (lets whoever holds the list check that the
# certificate covers exactly those subjects), with its first subject.
_SERVICES_OF = """
SELECT request_id, service, subjects, erased, first_completed_at, last_completed_at
FROM rights_request_services WHERE tenant_id = $1 AND request_id = ANY($2::uuid[])
ORDER BY request_id, service
"""
_RECIPIENTS_OF = """
SELECT request_id, recipient_id, selected, acknowledged, dead_lettered, first_acknowledged_at,
       last_acknowledged_at, last_dead_lettered_at
FROM rights_request_recipients WHERE tenant_id = $1 AND request_id = ANY($2::uuid[])
ORDER BY request_id, recipient_id
"""
_SUBJECTS_OF = """
SELECT request_id,
       encode(sha256(convert_to(string_agg(subject_ref, E'\\n' ORDER BY subject_ref), 'UTF8')),
              'hex') AS digest,
       min(subject_ref) FILTER (WHERE n = 1) AS first_subject
FROM rights_request_subjects WHERE tenant_id = $1 AND request_id = ANY($2::uuid[])
GROUP BY request_id
"""
_CLOSE_MANY = """
UPDATE rights_requests AS q SET
    state = 'completed', pauses = t.pauses::jsonb, closed_at = t.closed_at, due_at = t.due_at,
    certificate = t.certificate, updated_at = now()
FROM unnest($2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[], $6::text[])
         AS t(id, pauses, closed_at, due_at, certificate)
WHERE q.tenant_id = $1 AND q.id = t.id
"""
# Listing by due instant with a keyset cursor. `$3` filters on the deadline: 'overdue' (open,
# clock running, due instant passed), 'due-soon' (open, clock running, not overdue, at most
# $6 local calendar days to the due day: due_at is the start of the day after it), or 'all'.
_LIST = """
SELECT id, kind, requester, state, subject_count, received_at, due_at, timezone,
       holiday_country, roll_forward, pauses::text AS pauses, extension_months,
       extension_reason, extension_notice_sent_at, extended_at, closed_at
FROM rights_requests
WHERE tenant_id = $1
  AND ($2::text IS NULL OR state = $2)
  AND CASE $3::text
        WHEN 'overdue' THEN closed_at IS NULL AND state <> 'received' AND due_at <= $4
        WHEN 'due-soon' THEN closed_at IS NULL AND state <> 'received' AND due_at > $4
             AND ((due_at AT TIME ZONE timezone)::date - 1)
                 - ($4::timestamptz AT TIME ZONE timezone)::date <= $6
        ELSE true
      END
  AND ($7::timestamptz IS NULL OR (due_at, id) > ($7, $8::uuid))
ORDER BY due_at, id
LIMIT $5
"""

# --- The `rights` worker: fan-out and deadline scan.
_OPEN = "SELECT tenant_id, request_id, fan_out, deadline FROM consentry_rights_open_requests($1)"
# Several requests locked at once, in id order (so two workers cannot deadlock on them).
_LOCK_MANY = f"""
SELECT {_COLUMNS} FROM rights_requests
WHERE tenant_id = $1 AND id = ANY($2::uuid[])
ORDER BY id
FOR NO KEY UPDATE
"""  # noqa: S608 - constant fragments
# The next subjects of several requests: per request (in the order given) up to its limit
# after its number.
_NEXT_SUBJECTS_OF = """
SELECT r.id AS request_id, s.n, s.subject_ref
FROM unnest($2::uuid[], $3::int[], $4::int[]) WITH ORDINALITY AS r(id, after, lim, o)
CROSS JOIN LATERAL (
    SELECT n, subject_ref FROM rights_request_subjects
    WHERE tenant_id = $1 AND request_id = r.id AND n > r.after
    ORDER BY n LIMIT r.lim
) AS s
ORDER BY r.o, s.n
"""
_SUBJECTS_ADDED = "SELECT consentry_rights_subjects_added($1)"
_ERASE = "SELECT subject_ref, subjects, consents, ledger FROM consentry_erase_subjects($1, $2)"
_ADVANCE_MANY = """
UPDATE rights_requests AS q SET fanned_out = t.f,
    fanned_out_at = CASE WHEN t.f = q.subject_count THEN $4 ELSE q.fanned_out_at END,
    updated_at = now()
FROM unnest($2::uuid[], $3::int[]) AS t(id, f)
WHERE q.tenant_id = $1 AND q.id = t.id
"""
_NOTICE = """
INSERT INTO rights_deadline_notices (tenant_id, request_id, status, due_at) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING
RETURNING 1
"""


# --- Deadline facts <-> columns


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def pauses_json(deadline: Deadline) -> str:
    """The deadline's pauses as stored (a JSON array)."""
    return json.dumps(
        [
            {"paused_at": _iso(p.paused_at), "resumed_at": _iso(p.resumed_at)}
            for p in deadline.pauses
        ]
    )


def deadline_of(row: asyncpg.Record) -> Deadline:
    """Rebuild a request's deadline from its stored facts (re-checking every rule)."""
    pauses = tuple(
        Pause(
            datetime.fromisoformat(p["paused_at"]),
            None if p["resumed_at"] is None else datetime.fromisoformat(p["resumed_at"]),
        )
        for p in json.loads(row["pauses"])
    )
    extension = None
    if row["extended_at"] is not None:
        extension = Extension(
            row["extension_months"],
            row["extension_reason"],
            row["extension_notice_sent_at"],
            row["extended_at"],
        )
    return Deadline.restore(
        row["received_at"],
        row["timezone"],
        row["holiday_country"],
        roll_forward=row["roll_forward"],
        pauses=pauses,
        extension=extension,
        closed_at=row["closed_at"],
    )


# --- Requests


async def insert_request(
    conn: Connection,
    *,
    tenant_id: UUID,
    request_id: UUID,
    kind: str,
    requester: str,
    state: str,
    subject_refs: Sequence[str],
    note_sealed: bytes | None,
    expected_services: Sequence[str],
    await_recipients: bool,
    deadline: Deadline,
    verified_at: datetime | None,
    started_at: datetime | None,
    export_public_key: bytes | None,
    export_key_sealed: bytes | None,
) -> asyncpg.Record:
    """Store a new request and its subjects (numbered in the order given); the request as
    `get_request` reads it."""
    row = await conn.fetchrow(
        _INSERT,
        tenant_id,
        request_id,
        kind,
        requester,
        state,
        len(subject_refs),
        note_sealed,
        list(expected_services),
        await_recipients,
        deadline.received_at,
        deadline.timezone,
        deadline.holiday_country,
        deadline.roll_forward,
        pauses_json(deadline),
        deadline.due_at,
        verified_at,
        started_at,
        export_public_key,
        export_key_sealed,
        list(subject_refs),
    )
    assert row is not None  # INSERT ... RETURNING returns the row or raises
    return row


async def get_request(
    conn: Connection, *, tenant_id: UUID, request_id: UUID, lock: bool = False
) -> asyncpg.Record | None:
    """The request (locked until the transaction ends with `lock`), or None."""
    return await conn.fetchrow(_LOCK if lock else _GET, tenant_id, request_id)


async def save(
    conn: Connection,
    *,
    tenant_id: UUID,
    request_id: UUID,
    state: str,
    deadline: Deadline,
    reason: str | None = None,
    verified_at: datetime | None = None,
    started_at: datetime | None = None,
    certificate: str | None = None,
) -> None:
    """Store the request's new state and deadline facts, and the derived due instant."""
    extension = deadline.extension
    await conn.execute(
        _SAVE,
        tenant_id,
        request_id,
        state,
        pauses_json(deadline),
        None if extension is None else extension.months,
        None if extension is None else extension.reason,
        None if extension is None else extension.notice_sent_at,
        None if extension is None else extension.extended_at,
        deadline.closed_at,
        deadline.due_at,
        reason,
        verified_at,
        started_at,
        certificate,
    )


async def wake_worker(conn: Connection) -> None:
    """Wake the `rights` worker now (`conn` must not be in a transaction)."""
    await conn.execute(_WAKE)


async def first_subject(conn: Connection, *, tenant_id: UUID, request_id: UUID) -> str | None:
    """The reference of the request's first subject."""
    ref: str | None = await conn.fetchval(_FIRST_SUBJECT, tenant_id, request_id)
    return ref


Report = dict[str, Any]  # one row of a report, without its request


async def _per_request(
    conn: Connection, sql: str, tenant_id: UUID, request_ids: list[UUID]
) -> dict[UUID, list[Report]]:
    found: dict[UUID, list[Report]] = {r: [] for r in request_ids}
    for row in await conn.fetch(sql, tenant_id, request_ids):
        found[row["request_id"]].append({k: v for k, v in row.items() if k != "request_id"})
    return found


async def services(conn: Connection, *, tenant_id: UUID, request_id: UUID) -> list[Report]:
    """Per internal service: subjects reported, what was erased, first and last report."""
    return (await _per_request(conn, _SERVICES_OF, tenant_id, [request_id]))[request_id]


async def recipients(conn: Connection, *, tenant_id: UUID, request_id: UUID) -> list[Report]:
    """Per recipient: subjects selected, acknowledged and dead-lettered, with times."""
    return (await _per_request(conn, _RECIPIENTS_OF, tenant_id, [request_id]))[request_id]


@dataclass(frozen=True, slots=True)
class Reports:
    """What a request's completion certificate states, as the bookkeeping holds it."""

    services: list[Report]  # per internal service (`services`)
    recipients: list[Report]  # per recipient (`recipients`)
    subjects_sha256: str  # of the subject references, sorted, newline-separated
    first_subject: str | None


async def reports_of(
    conn: Connection, *, tenant_id: UUID, request_ids: Sequence[UUID]
) -> dict[UUID, Reports]:
    """The certificate facts the bookkeeping holds for several requests, in three statements
    whatever their number."""
    ids = list(request_ids)
    services = await _per_request(conn, _SERVICES_OF, tenant_id, ids)
    recipients = await _per_request(conn, _RECIPIENTS_OF, tenant_id, ids)
    subjects = {row["request_id"]: row for row in await conn.fetch(_SUBJECTS_OF, tenant_id, ids)}
    empty = hashlib.sha256(b"").hexdigest()  # a request has subjects; this keeps the type
    return {
        r: Reports(
            services[r],
            recipients[r],
            subjects[r]["digest"] if r in subjects else empty,
            subjects[r]["first_subject"] if r in subjects else None,
        )
        for r in ids
    }


async def close_many(
    conn: Connection, *, tenant_id: UUID, closed: Sequence[tuple[UUID, Deadline, str]]
) -> None:
    """Store requests completed: (request, closed deadline, certificate) each."""
    await conn.execute(
        _CLOSE_MANY,
        tenant_id,
        [request_id for request_id, _, _ in closed],
        [pauses_json(deadline) for _, deadline, _ in closed],
        [deadline.closed_at for _, deadline, _ in closed],
        [deadline.due_at for _, deadline, _ in closed],
        [certificate for _, _, certificate in closed],
    )


async def list_requests(
    conn: Connection,
    *,
    tenant_id: UUID,
    state: str | None,
    deadline: str,
    now: datetime,
    limit: int,
    soon_days: int,
    after: tuple[datetime, UUID] | None,
) -> list[asyncpg.Record]:
    """A page of requests by (due_at, id), after the cursor `after`."""
    return list(
        await conn.fetch(
            _LIST,
            tenant_id,
            state,
            deadline,
            now,
            limit,
            soon_days,
            None if after is None else after[0],
            None if after is None else after[1],
        )
    )


# --- Worker


async def open_requests(conn: Connection, *, due_by: datetime) -> list[asyncpg.Record]:
    """Every tenant's open requests with work: (tenant_id, request_id, fan_out, deadline);
    `deadline`: due by `due_by` and not yet reported overdue for that due instant."""
    return list(await conn.fetch(_OPEN, due_by))


async def lock_requests(
    conn: Connection, *, tenant_id: UUID, request_ids: Sequence[UUID]
) -> list[asyncpg.Record]:
    """The tenant's requests among `request_ids`, locked (in id order) until the
    transaction ends."""
    return list(await conn.fetch(_LOCK_MANY, tenant_id, list(request_ids)))


async def next_subjects_of(
    conn: Connection, *, tenant_id: UUID, chunks: Sequence[tuple[UUID, int, int]]
) -> list[asyncpg.Record]:
    """The next subjects of several requests: (request_id, n, subject_ref), for each
    (request, after number, limit) in `chunks`, in that order and by number."""
    return list(
        await conn.fetch(
            _NEXT_SUBJECTS_OF,
            tenant_id,
            [request_id for request_id, _, _ in chunks],
            [after for _, after, _ in chunks],
            [limit for _, _, limit in chunks],
        )
    )


async def advance_many(
    conn: Connection, *, tenant_id: UUID, fanned_out: dict[UUID, int], now: datetime
) -> None:
    """`advance` for several requests: request -> its last subject number fanned out."""
    ids = sorted(fanned_out)
    await conn.execute(_ADVANCE_MANY, tenant_id, ids, [fanned_out[i] for i in ids], now)


async def subjects_added(conn: Connection, added: int) -> bool:
    """Tell PostgreSQL that a request added `added` rows to its subjects: the table is
    analyzed now if that is more than autovacuum would let pass (migration 0014). True if it
    was."""
    return bool(await conn.fetchval(_SUBJECTS_ADDED, added))


async def erase_subjects(
    conn: Connection, *, tenant_id: UUID, subject_refs: Sequence[str]
) -> dict[str, dict[str, int]]:
    """Erase the consent service's own data of the subjects; per reference, rows deleted."""
    rows = await conn.fetch(_ERASE, tenant_id, list(subject_refs))
    return {
        row["subject_ref"]: {
            "subjects": row["subjects"],
            "consents": row["consents"],
            "ledger": row["ledger"],
        }
        for row in rows
    }


async def record_notice(
    conn: Connection, *, tenant_id: UUID, request_id: UUID, status: str, due_at: datetime
) -> bool:
    """Remember a deadline event; False when it was published already."""
    return await conn.fetchval(_NOTICE, tenant_id, request_id, status, due_at) is not None
