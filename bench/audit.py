"""Following the audit API, and finding the subject references of subjects we wrote."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bench.rawhttp import PURPOSE, HttpConnection, ProtocolError, RequestBuilder
from consentry.audit.v1 import audit_pb2
from consentry.consent.v1 import consent_pb2

GIVEN = "consentry.consent.given.v1"
PAGE = 1000


class BenchError(RuntimeError):
    """The benchmark cannot go on (a service misbehaves or does not answer)."""


@dataclass(frozen=True)
class Seen:
    """One audit entry and the wall-clock time the follower first saw it."""

    seen_at: float
    appended_at: float
    seq: int
    event_id: str
    entry: str


@dataclass
class AuditFollower:
    """Reads the audit chain from `after` on; records entries while `keep` is set."""

    conn: HttpConnection
    builder: RequestBuilder
    after: int = 0
    keep: bool = False
    seen: dict[str, list[Seen]] = field(default_factory=dict)
    polls: int = 0

    async def poll(self) -> None:
        """Read every entry appended since the last poll."""
        while True:
            target = f"/v1/audit/entries?after_seq={self.after}&limit={PAGE}"
            page: dict[str, Any] = await self.conn.get_json(self.builder.get(target))
            now = time.time()
            self.polls += 1
            for item in page["entries"]:
                if self.keep:
                    appended = datetime.fromisoformat(item["appended_at"]).timestamp()
                    seen = Seen(now, appended, int(item["seq"]), item["event_id"], item["entry"])
                    self.seen.setdefault(item["subject_ref"], []).append(seen)
            if page["entries"]:
                self.after = int(page["entries"][-1]["seq"])
            if page["next_after_seq"] is None:
                return

    async def until(self, done: Callable[[], bool], limit_s: float, interval: float = 0.02) -> bool:
        """Poll every `interval` s until `done()` is true (True) or `limit_s` s pass (False)."""
        deadline = time.monotonic() + limit_s
        while True:
            await self.poll()
            if done():
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(interval)

    async def until_head(self, seq: int, limit_s: float) -> float | None:
        """Seconds until the chain reaches `seq`, or None after `limit_s` s."""
        started = time.monotonic()
        reached = await self.until(lambda: self.after >= seq, limit_s, interval=0.05)
        return round(time.monotonic() - started, 3) if reached else None


async def subject_refs(
    host: str, port: int, subjects: Sequence[str], connections: int = 8
) -> dict[str, str]:
    """subject id -> subject_ref, read with `GET /v1/subjects/{id}/consents`."""
    builder = RequestBuilder(host, port)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for subject in subjects:
        queue.put_nowait(subject)
    refs: dict[str, str] = {}

    async def worker() -> None:
        conn = HttpConnection(host, port)
        try:
            while not queue.empty():
                subject = queue.get_nowait()
                body = await conn.get_json(builder.get(f"/v1/subjects/{subject}/consents"))
                refs[subject] = str(body["subject_ref"])
        finally:
            await conn.close()

    try:
        await asyncio.gather(*(worker() for _ in range(connections)))
    except (OSError, ProtocolError) as exc:
        raise BenchError(f"reading subject references failed: {exc}") from exc
    return refs


def is_first_given(seen: Seen) -> bool:
    """The stored entry is a `given` decision for our purpose at subject version 1."""
    stored = audit_pb2.AuditEntry.FromString(base64.b64decode(seen.entry))
    if stored.event_type != GIVEN:
        return False
    decision = consent_pb2.ConsentGiven.FromString(stored.data).decision
    return decision.purpose == PURPOSE and decision.subject_version == 1
