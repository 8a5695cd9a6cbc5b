"""Transactional outbox: events are written in the same transaction as the state change.

`add(conn, event)` encodes the event exactly as it will go on the wire and inserts it into
`eventing_outbox` inside the caller's open transaction, so the state change and its event
commit or roll back together. The relay (`consentry.eventing.relay`) publishes the rows.

Ordering per key: before inserting, `add` takes a transaction-scoped advisory lock on the
event's key. A second transaction writing an event for the same key waits until the first
commits or rolls back, so for any one key the outbox positions (identity values) are assigned
in commit order. Identity values of *different* keys may still commit out of order; that is
harmless because the relay does not track a high-water mark: it always reads every
unpublished row in position order, and Kafka only orders records per partition (per key).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from consentry.eventing.db import Connection
from consentry.eventing.envelope import Event, encode

# One statement for any number of events: first the advisory lock of every distinct key, in
# key order (two transactions locking overlapping keys cannot deadlock), then the rows, in
# the caller's order.
_INSERT_MANY = """
WITH key_locks AS (
    SELECT count(pg_advisory_xact_lock(hashtextextended(encode(k, 'escape'), 0))) AS locked
    FROM (SELECT DISTINCT k FROM unnest($3::bytea[]) AS k ORDER BY k) AS keys
)
INSERT INTO eventing_outbox (event_id, topic, message_key, event_type, headers, payload)
SELECT o.e, o.t, o.k, o.ty, o.h, o.p
FROM key_locks,
     unnest($1::uuid[], $2::text[], $3::bytea[], $4::text[], $5::jsonb[], $6::bytea[])
         WITH ORDINALITY AS o(e, t, k, ty, h, p, n)
ORDER BY o.n
"""


def _row(event: Event) -> tuple[str, str, bytes, str, str, bytes]:
    record = encode(event)
    headers = {name: value.decode() for name, value in record.headers}
    return (
        event.id,
        record.topic,
        record.key or b"",
        event.type.name,
        json.dumps(headers),
        record.value,
    )


OutboxColumns = tuple[list[str], list[str], list[bytes], list[str], list[str], list[bytes]]


def columns(events: Iterable[Event]) -> OutboxColumns:
    """The outbox rows of `events` as column arrays (event_id, topic, message_key, event_type,
    headers, payload), for a caller that inserts them in its own multi-row statement
    (`INSERT INTO eventing_outbox ... SELECT ... FROM unnest($n::uuid[], $n+1::text[],
    $n+2::bytea[], $n+3::text[], $n+4::jsonb[], $n+5::bytea[]) WITH ORDINALITY ... ORDER BY
    ordinality`). Such a caller skips `add`'s per-key advisory lock, so it must itself hold
    a lock that serialises every writer of the same keys (e.g. the subject's row lock) until
    it commits; otherwise per-key order could differ from commit order.
    """
    rows = [_row(event) for event in events]
    return (
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [r[3] for r in rows],
        [r[4] for r in rows],
        [r[5] for r in rows],
    )


async def add(conn: Connection, event: Event) -> None:
    """Queue `event` for publication inside the caller's transaction."""
    await add_many(conn, [event])


async def add_many(conn: Connection, events: Iterable[Event]) -> None:
    """Queue several events, in order, inside the caller's transaction."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.add must run inside the state change's transaction")
    queued = columns(events)
    if queued[0]:
        await conn.execute(_INSERT_MANY, *queued)
