"""In-memory copies of lists for the suppression filter, kept current by the change feed.

The filter must answer for 10,000 to 100,000 refs per call at hundreds of thousands of refs per
second. In PostgreSQL that costs a hash of the whole list per call (or ~4 µs per index
lookup); an in-process dict costs ~0.1 µs per ref. Each copy holds, per member of one
(tenant, topic, channel) list, why it may not be sent to (`list_members.blocked`; None:
sendable).

Never stale: every filter call first reads the tenant's committed generation (migration
0002: writers bump it last, under its row lock, so generations commit in order). A copy older
than that applies the changes recorded since (the subjects touched, re-read from
`list_members`); a copy older than what was pruned, or none, is loaded in full. Everything
runs in the call's own transaction, after the generation was read, so the copy is at least
as new as every change committed before the call. Updates of one copy are serialised (a
lock per list), so an older read never overwrites a newer one.

Copies are bounded by `max_refs` members in all (least recently used copies go first); a
list larger than the bound is not copied and the filter asks the database instead.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from uuid import UUID

from consentry.eventing.db import Connection
from consentry.preferences.lists import repository

ListKey = tuple[UUID, str, str]  # tenant, topic, channel


@dataclass
class _Copy:
    generation: int
    blocked: dict[str, int | None]
    used: float = field(default_factory=time.monotonic)


class ListCache:
    """Copies of lists, for one API process."""

    def __init__(self, max_refs: int) -> None:
        self.max_refs = max_refs
        self._copies: dict[ListKey, _Copy] = {}
        self._locks: dict[ListKey, asyncio.Lock] = {}
        self.loads = 0
        self.refreshes = 0

    async def members(
        self, conn: Connection, *, tenant_id: UUID, topic: str, channel: str
    ) -> dict[str, int | None] | None:
        """The list's members and why each may not be sent to (None: sendable), current as of
        this call; None when the list is too large to copy. On the call's tenant-scoped
        connection, in its transaction."""
        if self.max_refs <= 0:
            return None
        key = (tenant_id, topic, channel)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            current, pruned = await repository.generation(conn, tenant_id=tenant_id)
            copy = self._copies.get(key)
            if copy is None or copy.generation < pruned:
                copy = await self._load(conn, key, current)
                if copy is None:
                    return None
            elif copy.generation < current:
                changed = await repository.changed_since(
                    conn, tenant_id=tenant_id, after=copy.generation, upto=current
                )
                fresh = await repository.list_state(
                    conn, tenant_id=tenant_id, topic=topic, channel=channel, refs=changed
                )
                for ref in changed:
                    copy.blocked.pop(ref, None)
                copy.blocked.update(fresh)
                copy.generation = current
                self.refreshes += 1
            copy.used = time.monotonic()
            return copy.blocked

    async def _load(self, conn: Connection, key: ListKey, generation: int) -> _Copy | None:
        tenant_id, topic, channel = key
        self._copies.pop(key, None)
        rows = await repository.list_state(
            conn, tenant_id=tenant_id, topic=topic, channel=channel, refs=None
        )
        if len(rows) > self.max_refs:
            return None
        self._make_room(len(rows))
        copy = _Copy(generation, dict(rows))
        self._copies[key] = copy
        self.loads += 1
        return copy

    def _make_room(self, wanted: int) -> None:
        """Drop the least recently used copies until `wanted` more members fit."""
        held = sum(len(copy.blocked) for copy in self._copies.values())
        for key, copy in sorted(self._copies.items(), key=lambda item: item[1].used):
            if held + wanted <= self.max_refs:
                break
            held -= len(copy.blocked)
            del self._copies[key]

    def size(self) -> int:
        """Members held in all copies."""
        return sum(len(copy.blocked) for copy in self._copies.values())
