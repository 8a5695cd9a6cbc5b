"""The group-commit writer: shared transactions, answers after commit, failures stay alone."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from consentry.consent.consents.capture import Capture, CaptureOutcome, Decision, apply_captures
from consentry.consent.consents.models import ConsentMethod, ConsentStatus
from consentry.consent.consents.writer import CaptureWriter
from consentry.consent.db import set_tenant
from consentry.eventing import topics

from .conftest import TENANT_ID

pytestmark = pytest.mark.integration


def make(ref: str, fingerprint: str | None = None) -> Capture:
    return Capture(
        tenant_id=TENANT_ID,
        subject_ref=ref,
        decisions=(
            Decision("performance", ConsentStatus.GIVEN, True),
            Decision("targeting", ConsentStatus.WITHDRAWN, True),
        ),
        policy_version="2026-01",
        method=ConsentMethod.API,
        source=None,
        occurred_at=datetime.now(UTC),
        client_fingerprint=fingerprint,
    )


async def test_one_bad_capture_fails_alone(
    client: httpx.AsyncClient, consent_db: str, db: asyncpg.Connection
) -> None:
    pool = await asyncpg.create_pool(consent_db, min_size=1, max_size=2)
    assert pool is not None
    writer = CaptureWriter(pool, max_batch=64, flushers=1)
    writer.start()
    try:
        refs = [f"{n:064x}" for n in range(40)]
        # The database refuses this one (its fingerprint breaks a CHECK constraint).
        bad = make("f" * 64, fingerprint="not-a-fingerprint")
        results = await asyncio.gather(
            *(writer.submit(make(ref)) for ref in refs[:20]),
            writer.submit(bad),
            *(writer.submit(make(ref)) for ref in refs[20:]),
            return_exceptions=True,
        )
    finally:
        await writer.stop()
        await pool.close()
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1
    assert isinstance(failures[0], asyncpg.CheckViolationError)
    assert await db.fetchval("SELECT count(*) FROM consent_ledger") == 80
    consent_events = "SELECT count(*) FROM eventing_outbox WHERE topic = $1"
    assert await db.fetchval(consent_events, topics.CONSENT) == 80
    assert await db.fetchval("SELECT count(*) FROM subjects WHERE subject_ref = $1", "f" * 64) == 0


async def test_same_subject_twice_in_one_group_gets_consecutive_versions(
    client: httpx.AsyncClient, consent_db: str, db: asyncpg.Connection
) -> None:
    ref = "a" * 64
    flip = Capture(
        tenant_id=TENANT_ID,
        subject_ref=ref,
        decisions=(Decision("performance", ConsentStatus.WITHDRAWN, True),),
        policy_version="2026-01",
        method=ConsentMethod.API,
        source=None,
        occurred_at=datetime.now(UTC),
    )
    conn = await asyncpg.connect(consent_db)
    try:
        async with conn.transaction():
            await set_tenant(conn, TENANT_ID)
            first, second = await apply_captures(conn, TENANT_ID, [make(ref), flip])
    finally:
        await conn.close()
    assert isinstance(first, CaptureOutcome)
    assert isinstance(second, CaptureOutcome)
    assert first.subject_version == 2
    assert second.subject_version == 3
    rows = await db.fetch(
        "SELECT subject_version, purpose, status FROM consent_ledger ORDER BY subject_version"
    )
    assert [tuple(r) for r in rows] == [
        (1, "performance", "given"),
        (2, "targeting", "withdrawn"),
        (3, "performance", "withdrawn"),
    ]
    state = await db.fetchrow(
        "SELECT status, subject_version FROM consents WHERE purpose = 'performance'"
    )
    assert state is not None
    assert tuple(state) == ("withdrawn", 3)
    assert await db.fetchval("SELECT version FROM subjects WHERE subject_ref = $1", ref) == 3
