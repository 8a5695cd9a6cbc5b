"""A tenant's bulk erasure of many subjects: accepted in one call, fanned out in chunked
transactions (events counted in the outbox), and completed by the tracker's batch
bookkeeping; each stage is timed (printed; run with `-s` to see the numbers).

The size is enough for many fan-out chunks and tracker batches; the issue's figure (100,000
subjects across every service within 5 minutes) is measured by `make bench`
(`bench/rights_erasure.py`), not here: speed is a benchmark's job, not a test's."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest
import pytest_asyncio

from consentry.consent.rights.fanout import rights_pass
from consentry.consent.rights.tracker import RightsTracker
from consentry.consent.sealing import Sealer
from consentry.eventing import catalogue
from consentry.eventing.db import Pool
from consentry.eventing.envelope import ReceivedEvent
from consentry.eventing.testing import outbox_events

from .conftest import TENANT_ID
from .test_rights_support import (
    apply,
    received,
    request_row,
    selected,
    service_completed,
    verify_certificate,
)

pytestmark = pytest.mark.integration
SUBJECTS = 25_000
BATCH = 500  # records per partition batch (the consumer's max_poll_records)


@pytest_asyncio.fixture
async def pool(app_dsn: str) -> AsyncIterator[Pool]:
    """A pool logged in as the application's role (row-level security applies)."""
    created = await asyncpg.create_pool(app_dsn, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


async def count_events(db: asyncpg.Connection, event_type: catalogue.EventType) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM eventing_outbox WHERE event_type = $1", event_type.name
    )
    return count


@pytest.mark.timeout(300)
async def test_bulk_erasure_of_many_subjects(
    client: httpx.AsyncClient, pool: Pool, db: asyncpg.Connection, sealer: Sealer
) -> None:
    ids = [f"learner-{n:06d}@school.example" for n in range(SUBJECTS)]

    started = time.perf_counter()
    response = await client.post(
        "/v1/rights-requests",
        json={"kind": "erasure", "requester": "tenant", "subject_ids": ids},
    )
    accepted = time.perf_counter() - started
    assert response.status_code == 202, response.text
    filed = response.json()
    rid = filed["id"]
    assert filed["subject_count"] == SUBJECTS
    assert filed["state"] == "in-progress"
    assert len(response.request.content) > 25 * SUBJECTS  # one call, all of them
    stored = await db.fetchval(
        "SELECT count(*) FROM rights_request_subjects WHERE request_id = $1", uuid.UUID(rid)
    )
    assert stored == SUBJECTS
    # No identifier in clear anywhere in the database.
    assert (
        await db.fetchval(
            "SELECT count(*) FROM rights_request_subjects WHERE subject_ref LIKE '%school%'"
        )
        == 0
    )

    started = time.perf_counter()
    fanned = await rights_pass(pool, now=datetime.now(UTC), batch_size=1000)
    fan_out = time.perf_counter() - started
    assert fanned == SUBJECTS
    assert await count_events(db, catalogue.ERASURE_REQUESTED) == SUBJECTS
    assert await count_events(db, catalogue.ERASURE_COMPLETED) == SUBJECTS

    # The answers of every service and of the notifier (no recipient for these subjects),
    # decoded as the consumer would, in partition-sized batches.
    refs = [
        r["subject_ref"]
        for r in await db.fetch(
            "SELECT subject_ref FROM rights_request_subjects WHERE request_id = $1 ORDER BY n",
            uuid.UUID(rid),
        )
    ]
    started = time.perf_counter()
    # The consent service's own answers as they are in its outbox (the relay publishes those).
    answers: list[ReceivedEvent] = await outbox_events(db, catalogue.ERASURE_COMPLETED)
    for ref in refs:
        answers.append(received(service_completed(TENANT_ID, ref, rid)))
        answers.append(received(selected(TENANT_ID, ref, rid, [])))
    decoding = time.perf_counter() - started

    tracker = RightsTracker(sealer)
    started = time.perf_counter()
    for offset in range(0, len(answers), BATCH):
        await apply(pool, tracker, answers[offset : offset + BATCH])
    tracking = time.perf_counter() - started

    row = await request_row(db, rid)
    assert row["state"] == "completed"
    assert row["subjects_done"] == SUBJECTS
    jwks = (await client.get(f"/v1/tenants/{TENANT_ID}/jwks.json")).json()
    claims = verify_certificate(row["certificate"], jwks, str(TENANT_ID))
    assert claims["subjects"]["count"] == SUBJECTS
    assert {s["service"]: s["subjects"] for s in claims["services"]} == {
        "consent": SUBJECTS,
        "preferences": SUBJECTS,
    }
    print(  # the measurement this test exists for
        f"\nbulk erasure of {SUBJECTS:,} subjects: accepted in {accepted:.1f} s, "
        f"fanned out ({2 * SUBJECTS:,} events) in {fan_out:.1f} s, "
        f"{len(answers):,} answers tracked in {tracking:.1f} s "
        f"(+{decoding:.1f} s decoding them)"
    )
