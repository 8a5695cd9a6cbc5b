"""SQL of the marketing lists. Functions receive an open connection in a transaction scoped
to the tenant (`set_tenant`); every multi-row write is one statement over arrays (`unnest`),
so a batch of a thousand events costs a dozen round trips, not thousands."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection

# Subjects are created (versions 0) before they are locked, so that every subject of a batch
# can be locked in one statement, in a fixed order (no deadlock with the erasure handler).
_ENSURE_SUBJECTS = """
INSERT INTO list_subjects (tenant_id, subject_ref)
SELECT $1, ref FROM unnest($2::text[]) AS ref
ON CONFLICT DO NOTHING
"""
_LOCK_SUBJECTS = """
SELECT subject_ref, preferences_version, consent_version, marketing_consent
FROM list_subjects WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
ORDER BY subject_ref
FOR UPDATE
"""
_SUPPRESSIONS_OF = """
SELECT subject_ref, topic, channel, reason, suppressed_at, subject_version
FROM list_suppressions WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
"""
_MARKETING_TOPICS = """
SELECT name, channels FROM topics WHERE tenant_id = $1 AND category = 'marketing'
"""
_UPDATE_SUBJECTS = """
UPDATE list_subjects AS s
SET preferences_version = u.pv, consent_version = u.cv, marketing_consent = u.mc,
    updated_at = now()
FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::boolean[]) AS u (ref, pv, cv, mc)
WHERE s.tenant_id = $1 AND s.subject_ref = u.ref
"""
_DROP_ALL_MEMBERSHIPS = """
DELETE FROM list_members WHERE tenant_id = $1 AND subject_ref = ANY($2::text[])
"""
_DROP_TOPIC_MEMBERSHIPS = """
DELETE FROM list_members AS m
USING unnest($2::text[], $3::text[]) AS d (ref, topic)
WHERE m.tenant_id = $1 AND m.subject_ref = d.ref AND m.topic = d.topic
"""
_DROP_MEMBERSHIPS = """
DELETE FROM list_members AS m
USING unnest($2::text[], $3::text[], $4::text[]) AS d (ref, topic, channel)
WHERE m.tenant_id = $1 AND m.topic = d.topic AND m.channel = d.channel AND m.subject_ref = d.ref
"""
_ADD_MEMBERSHIPS = """
INSERT INTO list_members (tenant_id, topic, channel, subject_ref)
SELECT $1, topic, channel, ref
FROM unnest($2::text[], $3::text[], $4::text[]) AS a (ref, topic, channel)
ON CONFLICT DO NOTHING
"""
_LIFT_SUPPRESSIONS = """
DELETE FROM list_suppressions AS x
USING unnest($2::text[], $3::text[], $4::text[], $5::text[]) AS d (ref, topic, channel, reason)
WHERE x.tenant_id = $1 AND x.subject_ref = d.ref AND x.topic = d.topic
  AND x.channel = d.channel AND x.reason = d.reason AND x.reason <> 'erased'
"""
# RETURNING: only the rows inserted now are announced (a redelivered batch inserts none).
_ADD_SUPPRESSIONS = """
INSERT INTO list_suppressions
    (tenant_id, subject_ref, topic, channel, reason, suppressed_at, subject_version)
SELECT $1, ref, topic, channel, reason, at, version
FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[], $7::bigint[])
    AS a (ref, topic, channel, reason, at, version)
ON CONFLICT DO NOTHING
RETURNING subject_ref, topic, channel, reason, subject_version
"""

# The rank of the most serious reason not to send (see `models.Verdict`): 1 erased, 2 consent
# withdrawn, 3 unsubscribed, from the suppressions covering the list (topic $2, channel $3
# or '' for all), else 4 without marketing-email consent; 5 (filter only) not a member.
_SUPPRESSION_RANK = """
min(CASE x.reason WHEN 'erased' THEN 1 WHEN 'consent-withdrawn' THEN 2 ELSE 3 END)
"""
# Recompute `list_members.blocked` of the given subjects (after the batch's writes).
_REFRESH_BLOCKED = f"""
UPDATE list_members AS m
SET blocked = b.rank
FROM (
    SELECT m2.topic, m2.channel, m2.subject_ref,
           coalesce(
               (SELECT {_SUPPRESSION_RANK} FROM list_suppressions AS x
                WHERE x.tenant_id = m2.tenant_id AND x.subject_ref = m2.subject_ref
                  AND x.topic IN ('', m2.topic) AND x.channel IN ('', m2.channel)),
               CASE WHEN ls.marketing_consent THEN NULL ELSE 4 END
           ) AS rank
    FROM list_members AS m2
    LEFT JOIN list_subjects AS ls
      ON ls.tenant_id = m2.tenant_id AND ls.subject_ref = m2.subject_ref
    WHERE m2.tenant_id = $1 AND m2.subject_ref = ANY($2::text[])
) AS b
WHERE m.tenant_id = $1 AND m.topic = b.topic AND m.channel = b.channel
  AND m.subject_ref = b.subject_ref AND m.blocked IS DISTINCT FROM b.rank
"""  # noqa: S608 - constant fragments

# The change feed (migration 0002): bump the tenant's generation (its row lock orders the
# tenant's writers until commit) and record the subjects touched under it.
_BUMP_GENERATION = """
INSERT INTO list_generations (tenant_id, generation) VALUES ($1, 1)
ON CONFLICT (tenant_id) DO UPDATE SET generation = list_generations.generation + 1
RETURNING generation
"""
_RECORD_CHANGES = """
INSERT INTO list_changes (tenant_id, generation, subject_ref)
SELECT $1, $2, ref FROM unnest($3::text[]) AS ref
"""
_PRUNE_CHANGES = """
WITH gone AS (
    DELETE FROM list_changes
    WHERE tenant_id = $1 AND changed_at < now() - make_interval(secs => $2)
    RETURNING generation
)
UPDATE list_generations
SET pruned_through = greatest(pruned_through, (SELECT max(generation) FROM gone))
WHERE tenant_id = $1
"""
_GENERATION = "SELECT generation, pruned_through FROM list_generations WHERE tenant_id = $1"
_CHANGED_SINCE = """
SELECT DISTINCT subject_ref FROM list_changes
WHERE tenant_id = $1 AND generation > $2 AND generation <= $3
"""
_LIST = """
SELECT subject_ref, blocked FROM list_members WHERE tenant_id = $1 AND topic = $2 AND channel = $3
"""
_LIST_OF = """
SELECT subject_ref, blocked FROM list_members
WHERE tenant_id = $1 AND topic = $2 AND channel = $3 AND subject_ref = ANY($4::text[])
"""

# --- reads of the API

# Keyset paging over the list's primary key; sendable = a member not blocked.
_MEMBERS_PAGE = """
SELECT m.subject_ref, s.data_key_sealed, s.contact_email_sealed
FROM list_members AS m
LEFT JOIN subjects AS s ON s.tenant_id = m.tenant_id AND s.subject_ref = m.subject_ref
WHERE m.tenant_id = $1 AND m.topic = $2 AND m.channel = $3 AND m.subject_ref > $4
  AND m.blocked IS NULL
ORDER BY m.subject_ref
LIMIT $5
"""
# The filter, step 1: the proposed refs (one comma-separated text: far cheaper to send and
# split than a text[] of 100,000 elements) against the list. Returns the refused members
# with their rank and the non-members with NULL; sendable refs return no row.
_FILTER_MEMBERS = """
SELECT r.ref, m.blocked
FROM string_to_table($4, ',') AS r (ref)
LEFT JOIN list_members AS m
  ON m.tenant_id = $1 AND m.topic = $2 AND m.channel = $3 AND m.subject_ref = r.ref
WHERE m.blocked IS NOT NULL OR m.subject_ref IS NULL
"""
# The same for fewer refs: a lookup per ref. Correlated subqueries on primary keys, so that
# the plan is an index lookup whatever the statistics say (joins planned on a table not yet
# analyzed were seen to rescan it for every ref).
_FILTER_MEMBERS_FEW = """
SELECT ref, blocked
FROM (
    SELECT r.ref,
           (SELECT coalesce(m.blocked, 0) FROM list_members AS m
            WHERE m.tenant_id = $1 AND m.topic = $2 AND m.channel = $3
              AND m.subject_ref = r.ref) AS blocked
    FROM string_to_table($4, ',') AS r (ref)
) AS probe
WHERE blocked IS DISTINCT FROM 0
"""
# Step 2: why each non-member may not be sent to (few in a real send list): lookups per ref.
_FILTER_OTHERS = f"""
SELECT r.ref,
       coalesce(
           (SELECT {_SUPPRESSION_RANK} FROM list_suppressions AS x
            WHERE x.tenant_id = $1 AND x.subject_ref = r.ref
              AND x.topic IN ('', $2) AND x.channel IN ('', $3)),
           CASE WHEN (SELECT ls.marketing_consent FROM list_subjects AS ls
                      WHERE ls.tenant_id = $1 AND ls.subject_ref = r.ref) THEN 5 ELSE 4 END
       ) AS rank
FROM string_to_table($4, ',') AS r (ref)
"""  # noqa: S608 - constant fragments
# For thousands of refs a hash join over the list beats an index lookup per ref (~4 µs
# each), but the planner cannot see how many refs the text holds: it is told (transaction-
# local settings), and given the memory to hash the list without spilling. Plans are made
# for each call (a cached generic plan would keep the join chosen for another size).
_MANY_REFS = 2000
_PLAN_FOR_MANY = """
SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
       set_config('enable_nestloop', 'off', true), set_config('work_mem', '64MB', true)
"""
_PLAN_FOR_FEW = """
SELECT set_config('plan_cache_mode', 'force_custom_plan', true),
       set_config('enable_nestloop', 'on', true)
"""

SubjectRow = tuple[str, int, int, bool | None]
SuppressionKey = tuple[str, str, str]  # topic, channel, reason


async def lock_subjects(
    conn: Connection, *, tenant_id: UUID, refs: Sequence[str]
) -> dict[str, asyncpg.Record]:
    """The processor's state of each subject (created if new), locked for this transaction."""
    ordered = sorted(set(refs))
    await conn.execute(_ENSURE_SUBJECTS, tenant_id, ordered)
    rows = await conn.fetch(_LOCK_SUBJECTS, tenant_id, ordered)
    return {row["subject_ref"]: row for row in rows}


async def suppressions_of(
    conn: Connection, *, tenant_id: UUID, refs: Sequence[str]
) -> dict[str, dict[SuppressionKey, tuple[datetime, int]]]:
    """Each subject's suppressions: (topic, channel, reason) -> (suppressed_at, version)."""
    found: dict[str, dict[SuppressionKey, tuple[datetime, int]]] = {ref: {} for ref in refs}
    for row in await conn.fetch(_SUPPRESSIONS_OF, tenant_id, list(refs)):
        key = (row["topic"], row["channel"], row["reason"])
        found[row["subject_ref"]][key] = (row["suppressed_at"], row["subject_version"])
    return found


async def marketing_topics(conn: Connection, *, tenant_id: UUID) -> dict[str, list[str]]:
    """The tenant's marketing topics and their channels."""
    rows = await conn.fetch(_MARKETING_TOPICS, tenant_id)
    return {row["name"]: list(row["channels"]) for row in rows}


async def update_subjects(conn: Connection, *, tenant_id: UUID, rows: Sequence[SubjectRow]) -> None:
    """Store (ref, preferences version, consent version, marketing consent) per subject."""
    if rows:
        refs, pv, cv, mc = (list(column) for column in zip(*rows, strict=True))
        await conn.execute(_UPDATE_SUBJECTS, tenant_id, refs, pv, cv, mc)


async def drop_all_memberships(conn: Connection, *, tenant_id: UUID, refs: Sequence[str]) -> None:
    """Remove the subjects from every list."""
    if refs:
        await conn.execute(_DROP_ALL_MEMBERSHIPS, tenant_id, list(refs))


async def drop_topic_memberships(
    conn: Connection, *, tenant_id: UUID, pairs: Sequence[tuple[str, str]]
) -> None:
    """Remove (ref, topic) from the topic's lists on every channel."""
    if pairs:
        refs, names = zip(*pairs, strict=True)
        await conn.execute(_DROP_TOPIC_MEMBERSHIPS, tenant_id, list(refs), list(names))


async def change_memberships(
    conn: Connection,
    *,
    tenant_id: UUID,
    dropped: Sequence[tuple[str, str, str]],
    added: Sequence[tuple[str, str, str]],
) -> None:
    """Remove, then add, (ref, topic, channel) memberships."""
    if dropped:
        refs, names, channels = zip(*dropped, strict=True)
        await conn.execute(_DROP_MEMBERSHIPS, tenant_id, list(refs), list(names), list(channels))
    if added:
        refs, names, channels = zip(*added, strict=True)
        await conn.execute(_ADD_MEMBERSHIPS, tenant_id, list(refs), list(names), list(channels))


async def lift_suppressions(
    conn: Connection, *, tenant_id: UUID, keys: Sequence[tuple[str, str, str, str]]
) -> None:
    """Delete (ref, topic, channel, reason) suppressions (never an `erased` one)."""
    if keys:
        refs, names, channels, reasons = (list(column) for column in zip(*keys, strict=True))
        await conn.execute(_LIFT_SUPPRESSIONS, tenant_id, refs, names, channels, reasons)


async def add_suppressions(
    conn: Connection,
    *,
    tenant_id: UUID,
    rows: Sequence[tuple[str, str, str, str, datetime, int]],
) -> list[asyncpg.Record]:
    """Insert (ref, topic, channel, reason, at, version) suppressions; return the new ones."""
    if not rows:
        return []
    columns = [list(column) for column in zip(*rows, strict=True)]
    return list(await conn.fetch(_ADD_SUPPRESSIONS, tenant_id, *columns))


async def members_page(
    conn: Connection, *, tenant_id: UUID, topic: str, channel: str, after: str, limit: int
) -> list[asyncpg.Record]:
    """Up to `limit` sendable members after `after`, in subject_ref order, with the sealed
    data key and contact of each (NULL when none is kept)."""
    return list(await conn.fetch(_MEMBERS_PAGE, tenant_id, topic, channel, after, limit))


async def refresh_blocked(conn: Connection, *, tenant_id: UUID, refs: Sequence[str]) -> None:
    """Recompute why each of the subjects' memberships may not be sent to (NULL: sendable)."""
    if refs:
        await conn.execute(_REFRESH_BLOCKED, tenant_id, list(refs))


async def bump_generation(conn: Connection, *, tenant_id: UUID, refs: Sequence[str]) -> int:
    """Record that `refs` changed in a new generation of the tenant's lists (last statement
    of a writer: the row lock it takes is held until commit)."""
    generation: int = await conn.fetchval(_BUMP_GENERATION, tenant_id)
    await conn.execute(_RECORD_CHANGES, tenant_id, generation, list(refs))
    return generation


async def prune_changes(conn: Connection, *, tenant_id: UUID, older_than_s: float) -> None:
    """Forget changes older than `older_than_s` (copies older than that reload in full)."""
    await conn.execute(_PRUNE_CHANGES, tenant_id, older_than_s)


async def generation(conn: Connection, *, tenant_id: UUID) -> tuple[int, int]:
    """The tenant's (generation, pruned_through)."""
    row = await conn.fetchrow(_GENERATION, tenant_id)
    return (0, 0) if row is None else (row["generation"], row["pruned_through"])


async def changed_since(conn: Connection, *, tenant_id: UUID, after: int, upto: int) -> list[str]:
    """The subjects changed in generations (after, upto]."""
    return [row[0] for row in await conn.fetch(_CHANGED_SINCE, tenant_id, after, upto)]


async def list_state(
    conn: Connection, *, tenant_id: UUID, topic: str, channel: str, refs: Sequence[str] | None
) -> list[tuple[str, int | None]]:
    """(ref, blocked) of the list's members (all of them, or those among `refs`)."""
    if refs is None:
        rows = await conn.fetch(_LIST, tenant_id, topic, channel)
    else:
        rows = await conn.fetch(_LIST_OF, tenant_id, topic, channel, list(refs))
    return [(row[0], row[1]) for row in rows]


async def why_not(
    conn: Connection, *, tenant_id: UUID, topic: str, channel: str, refs: Sequence[str]
) -> dict[str, int]:
    """The reason rank of each ref that is not a member of the list (step 2 of the filter):
    index lookups per ref (~10 µs each), whatever the size of the tenant's tables; a hash
    join would read all of them on every call."""
    await conn.execute(_PLAN_FOR_FEW)
    rows = await conn.fetch(_FILTER_OTHERS, tenant_id, topic, channel, ",".join(refs))
    return {row[0]: row[1] for row in rows}


async def refused(
    conn: Connection, *, tenant_id: UUID, topic: str, channel: str, refs: Sequence[str]
) -> dict[str, int]:
    """The refs of `refs` (distinct) that must not be sent to, with the rank of the most
    serious reason, all from the database; in the tenant's transaction (which this may tune
    for a large call)."""
    many = len(refs) >= _MANY_REFS
    await conn.execute(_PLAN_FOR_MANY if many else _PLAN_FOR_FEW)
    query = _FILTER_MEMBERS if many else _FILTER_MEMBERS_FEW
    rows = await conn.fetch(query, tenant_id, topic, channel, ",".join(refs))
    ranks: dict[str, int] = {}
    others = []
    for ref, blocked in rows:
        if blocked is None:
            others.append(ref)
        else:
            ranks[ref] = blocked
    if others:
        ranks.update(
            await why_not(conn, tenant_id=tenant_id, topic=topic, channel=channel, refs=others)
        )
    return ranks
