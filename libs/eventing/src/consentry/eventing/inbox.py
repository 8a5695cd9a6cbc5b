"""Idempotent inbox: a consumer records each event id in the same transaction as its effect.

`claim` inserts `(consumer, event_id)` with `ON CONFLICT DO NOTHING`; it returns False when
the event was already processed, and the caller then skips the effect. Because the claim and
the effect commit together, a crash between them loses neither and applies neither twice;
the Kafka offset is committed only afterwards, so redelivery is always safe.
"""

from __future__ import annotations

from consentry.eventing.db import Connection

_CLAIM = """
INSERT INTO eventing_inbox (consumer, event_id) VALUES ($1, $2)
ON CONFLICT DO NOTHING
RETURNING 1
"""


async def claim(conn: Connection, consumer: str, event_id: str) -> bool:
    """Record that `consumer` processes `event_id`; False if it already did."""
    if not conn.is_in_transaction():
        raise RuntimeError("inbox.claim must run inside the effect's transaction")
    return await conn.fetchval(_CLAIM, consumer, event_id) is not None
