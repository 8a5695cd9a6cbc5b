"""The marketing-list processor as a real process (faust worker) between the real broker and
the real database, logged in as the application's role (RLS applies).

The tests share the broker's topics, so each uses its own tenant, subjects and topic names,
and its own processor name (consumer group, inbox consumer, dead-letter topic).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio

from consentry.eventing import catalogue, topics
from consentry.eventing.envelope import KafkaRecord, encode
from consentry.eventing.sealing import Sealer
from consentry.eventing.testing import collect, header, outbox_events
from consentry.preferences.lists import repository
from consentry.preferences.v1 import lists_pb2

from .conftest import provision_tenant
from .test_lists_helpers import (
    Processor,
    consent,
    ensure_topics,
    eventually,
    joined,
    new_ref,
    new_topic,
    processor_env,
    produce,
    unsubscribed,
)

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def processor(app_dsn: str, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Processor]:
    """A running processor of its own (group, inbox name, dead-letter topic)."""
    name = f"lp-{secrets.token_hex(4)}"
    await ensure_topics(kafka_bootstrap, topics.dead_letter_topic(name))
    proc = Processor(processor_env(app_dsn, kafka_bootstrap, name), tmp_path / "processor.log")
    proc.start()
    try:
        yield proc
    finally:
        code = proc.stop()
        failures = [
            line for line in proc.log_lines() if line.get("event") == "list processor failed"
        ]
        assert not failures, failures
        assert code in (0, None, -9), proc.log.read_text()[-3000:]


async def suppressions(
    db: asyncpg.Connection, tenant: uuid.UUID, ref: str
) -> set[tuple[str, str, str]]:
    rows = await db.fetch(
        "SELECT topic, channel, reason FROM list_suppressions"
        " WHERE tenant_id = $1 AND subject_ref = $2",
        tenant,
        ref,
    )
    return {(r["topic"], r["channel"], r["reason"]) for r in rows}


async def memberships(db: asyncpg.Connection, tenant: uuid.UUID, ref: str) -> set[tuple[str, str]]:
    rows = await db.fetch(
        "SELECT topic, channel FROM list_members WHERE tenant_id = $1 AND subject_ref = $2",
        tenant,
        ref,
    )
    return {(r["topic"], r["channel"]) for r in rows}


async def verdicts(
    db: asyncpg.Connection, tenant: uuid.UUID, topic: str, refs: list[str]
) -> dict[str, int]:
    """The filter's answer (reason rank per refused ref; sendable refs absent)."""
    async with db.transaction():
        return await repository.refused(
            db, tenant_id=tenant, topic=topic, channel="email", refs=refs
        )


async def versions(db: asyncpg.Connection, tenant: uuid.UUID, ref: str) -> asyncpg.Record | None:
    return await db.fetchrow(
        "SELECT preferences_version, consent_version, marketing_consent FROM list_subjects"
        " WHERE tenant_id = $1 AND subject_ref = $2",
        tenant,
        ref,
    )


async def suppressed_events(db: asyncpg.Connection, tenant: uuid.UUID) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for event in await outbox_events(db, catalogue.LIST_MEMBER_SUPPRESSED):
        message = event.message
        assert isinstance(message, lists_pb2.ListMemberSuppressed)
        if message.tenant_id == str(tenant):
            reason = lists_pb2.SuppressionReason.Name(message.reason)
            found.append(
                (
                    message.subject_ref,
                    message.topic,
                    message.channel,
                    reason,
                    str(message.subject_version),
                )
            )
    return found


async def test_membership_unsubscribe_and_the_suppressed_event(
    db: asyncpg.Connection, processor: Processor, kafka_bootstrap: str
) -> None:
    tenant, topic = uuid.uuid4(), new_topic()
    a, b = new_ref(), new_ref()
    await produce(
        kafka_bootstrap,
        [
            consent(tenant, a, 1, given=True),
            consent(tenant, b, 1, given=True),
            joined(tenant, a, 1, [(topic, "email"), (topic, "sms")]),
            joined(tenant, b, 1, [(topic, "email")]),
            # A transactional topic never makes a list.
            joined(tenant, b, 2, [("receipts", "email")], category="transactional"),
        ],
    )
    # a and b are keyed apart (possibly on different partitions, applied in either order).
    await eventually(lambda: memberships(db, tenant, b), lambda m: m == {(topic, "email")})
    await eventually(
        lambda: memberships(db, tenant, a), lambda m: m == {(topic, "email"), (topic, "sms")}
    )
    # The consents come on another topic (another partition, applied in its own time).
    await eventually(lambda: verdicts(db, tenant, topic, [a, b]), lambda v: v == {})  # sendable

    # b leaves the topic on email (one click): off the list, suppressed, announced.
    await produce(
        kafka_bootstrap,
        [
            joined(tenant, b, 3, [(topic, "email")], subscribed=False),
            unsubscribed(tenant, b, 3, topic, ["email"]),
        ],
    )
    await eventually(
        lambda: suppressions(db, tenant, b), lambda s: s == {(topic, "email", "unsubscribed")}
    )
    assert await memberships(db, tenant, b) == set()
    assert await verdicts(db, tenant, topic, [a, b]) == {b: 3}  # 3: unsubscribed
    assert await suppressed_events(db, tenant) == [
        (b, topic, "email", "SUPPRESSION_REASON_UNSUBSCRIBED", "3")
    ]


async def test_consent_withdrawal_suppresses_and_reconsent_lifts_only_that(
    db: asyncpg.Connection, processor: Processor, kafka_bootstrap: str
) -> None:
    tenant, topic = uuid.uuid4(), new_topic()
    a, b = new_ref(), new_ref()
    await produce(
        kafka_bootstrap,
        [
            consent(tenant, a, 1, given=True),
            consent(tenant, b, 1, given=True),
            joined(tenant, a, 1, [(topic, "email")]),
            joined(tenant, b, 1, [(topic, "email")]),
            consent(tenant, a, 2, given=False),
            consent(tenant, b, 2, given=False),
            unsubscribed(tenant, a, 2),  # a also leaves all marketing
        ],
    )
    await eventually(
        lambda: verdicts(db, tenant, topic, [a, b]), lambda v: v == {a: 2, b: 2}
    )  # 2: consent withdrawn (more serious than unsubscribed)
    # The unsubscribe comes on the preferences topic, applied in its own time.
    await eventually(
        lambda: suppressions(db, tenant, a),
        lambda s: s == {("", "", "consent-withdrawn"), ("", "", "unsubscribed")},
    )

    await produce(
        kafka_bootstrap, [consent(tenant, a, 3, given=True), consent(tenant, b, 3, given=True)]
    )
    # b is sendable again; a only lost its consent suppression: it still unsubscribed.
    await eventually(lambda: verdicts(db, tenant, topic, [a, b]), lambda v: v == {a: 3})
    assert await suppressions(db, tenant, a) == {("", "", "unsubscribed")}
    assert await suppressions(db, tenant, b) == set()
    events = await suppressed_events(db, tenant)
    assert sorted(events) == sorted(
        [
            (a, "", "", "SUPPRESSION_REASON_CONSENT_WITHDRAWN", "2"),
            (a, "", "", "SUPPRESSION_REASON_UNSUBSCRIBED", "2"),
            (b, "", "", "SUPPRESSION_REASON_CONSENT_WITHDRAWN", "2"),
        ]
    )


async def test_stale_events_are_ignored(
    db: asyncpg.Connection, processor: Processor, kafka_bootstrap: str
) -> None:
    tenant, topic = uuid.uuid4(), new_topic()
    a = new_ref()
    await produce(
        kafka_bootstrap,
        [
            consent(tenant, a, 5, given=False),
            joined(tenant, a, 3, [(topic, "email")]),
            # Late arrivals of older versions (e.g. replayed from another source): ignored.
            consent(tenant, a, 4, given=True),
            joined(tenant, a, 2, [(topic, "email")], subscribed=False),
            unsubscribed(tenant, a, 2, topic, ["email"]),
        ],
    )
    marker = new_ref()  # produced after (another key, maybe another partition: only a hint)
    await produce(kafka_bootstrap, [consent(tenant, marker, 1, given=True)])
    await eventually(lambda: versions(db, tenant, marker), lambda row: row is not None)
    # The subject's two topics are read independently: wait for both newest versions (each
    # topic's stale events follow them in the subject's partition).
    await eventually(
        lambda: versions(db, tenant, a),
        lambda row: row is not None and row["consent_version"] == 5,
    )
    row = await versions(db, tenant, a)
    assert row is not None
    assert (row["preferences_version"], row["consent_version"], row["marketing_consent"]) == (
        3,
        5,
        False,
    )
    assert await memberships(db, tenant, a) == {(topic, "email")}
    assert await suppressions(db, tenant, a) == {("", "", "consent-withdrawn")}


async def test_an_explicit_subscription_narrows_an_unsubscribe_all(
    db: asyncpg.Connection,
    processor: Processor,
    kafka_bootstrap: str,
    sealer: Sealer,
) -> None:
    tenant, news, offers = uuid.uuid4(), new_topic(), new_topic()
    await provision_tenant(db, sealer, tenant)
    for name, channels in ((news, ["email", "sms"]), (offers, ["email"])):
        await db.execute(
            "INSERT INTO topics (tenant_id, name, category, channels)"
            " VALUES ($1, $2, 'marketing', $3)",
            tenant,
            name,
            channels,
        )
    a = new_ref()
    await produce(
        kafka_bootstrap,
        [consent(tenant, a, 1, given=True), unsubscribed(tenant, a, 1)],
    )
    await eventually(lambda: suppressions(db, tenant, a), lambda s: s == {("", "", "unsubscribed")})
    await produce(kafka_bootstrap, [joined(tenant, a, 2, [(news, "email")])])
    await eventually(
        lambda: suppressions(db, tenant, a),
        lambda s: s == {(news, "sms", "unsubscribed"), (offers, "email", "unsubscribed")},
    )
    await eventually(lambda: verdicts(db, tenant, news, [a]), lambda v: v == {})  # consent too
    assert await verdicts(db, tenant, offers, [a]) == {a: 3}
    # The narrowed rows are the old suppression, not new ones: nothing more is announced.
    assert await suppressed_events(db, tenant) == [
        (a, "", "", "SUPPRESSION_REASON_UNSUBSCRIBED", "1")
    ]


async def test_poison_is_dead_lettered_and_the_processor_keeps_going(
    db: asyncpg.Connection, processor: Processor, kafka_bootstrap: str
) -> None:
    tenant = uuid.uuid4()
    before, after, bad_ref = new_ref(), new_ref(), "not-a-ref"
    garbage = KafkaRecord(topics.PREFERENCES, f"{tenant}/{before}".encode(), b"\x00junk", ())
    good = encode(consent(tenant, before, 1, given=True))
    unknown = KafkaRecord(
        topics.CONSENT,
        good.key,
        good.value,
        tuple(
            (name, b"consentry.consent.unheard_of.v1" if name == "ce_type" else value)
            for name, value in good.headers
        ),
    )
    await produce(
        kafka_bootstrap,
        [
            consent(tenant, before, 1, given=True),
            garbage,
            unknown,
            # Valid CloudEvents, but a subject ref the lists cannot hold.
            joined(tenant, bad_ref, 1, [("news", "email")]),
            consent(tenant, after, 1, given=True),
        ],
    )
    # before and after are keyed apart (possibly on different partitions, applied in either
    # order): both are applied, whatever sat between them.
    await eventually(lambda: versions(db, tenant, after), lambda row: row is not None)
    await eventually(lambda: versions(db, tenant, before), lambda row: row is not None)
    dead = await collect(
        kafka_bootstrap,
        topics.dead_letter_topic(processor.name),
        lambda kept: len(kept) >= 3,
        keep=lambda record: str(tenant).encode() in (record.key or b""),
        seconds=30,
    )
    reasons = {header(record, "dlq.reason") for record in dead}
    assert reasons == {"missing-headers", "unknown-type", "schema-violation"}
    assert {header(record, "dlq.consumer") for record in dead} == {processor.name}
    assert all(
        header(record, "dlq.topic") in (topics.PREFERENCES, topics.CONSENT) for record in dead
    )
    assert processor.alive()


async def test_restart_mid_stream_loses_nothing_and_applies_nothing_twice(
    db: asyncpg.Connection, app_dsn: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"lp-{secrets.token_hex(4)}"
    await ensure_topics(kafka_bootstrap, topics.dead_letter_topic(name))
    env = processor_env(app_dsn, kafka_bootstrap, name)
    # No offset is committed before the kill: everything applied so far is delivered again.
    first = Processor(
        {**env, "CONSENTRY_LIST_PROCESSOR_COMMIT_INTERVAL_MS": "600000"}, tmp_path / "first.log"
    )
    second = Processor(env, tmp_path / "second.log")
    tenant, topic = uuid.uuid4(), new_topic()
    refs = [new_ref() for _ in range(1000)]
    stream = []
    for ref in refs:
        stream += [
            consent(tenant, ref, 1, given=True),
            joined(tenant, ref, 1, [(topic, "email")]),
            joined(tenant, ref, 2, [(topic, "email")], subscribed=False),
            unsubscribed(tenant, ref, 2, topic, ["email"]),
        ]
    ids = [event.id for event in stream]
    mine = "SELECT count(*) FROM eventing_inbox WHERE consumer = $1 AND event_id = ANY($2)"

    async def claimed() -> int:
        return int(await db.fetchval(mine, name, ids))

    async def feed() -> None:
        for at in range(0, len(stream), 200):
            await produce(kafka_bootstrap, stream[at : at + 200])
            await asyncio.sleep(0.05)

    first.start()
    feeding = asyncio.create_task(feed())
    try:
        await eventually(claimed, lambda n: n > 0, seconds=60, interval=0.02)
        first.kill()  # mid-stream: SIGKILL, no clean shutdown, nothing committed
        applied_before = await claimed()
        assert 0 < applied_before < len(stream), applied_before
        second.start()
        await feeding
        await eventually(claimed, lambda n: n == len(stream), seconds=90)
        # The second processor read the applied events again and dropped them (inbox).
        stats = await eventually(
            lambda: _last_stats(second),
            lambda s: s is not None and s["applied"] + s["duplicates"] >= len(stream),
            seconds=30,
        )
        assert stats is not None
        assert stats["duplicates"] >= applied_before
        assert second.stop() == 0
    finally:
        feeding.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeding
        first.kill()
        second.kill()
    # Nothing lost: every subject's last state; nothing twice: one announcement each.
    rows = await db.fetch(
        "SELECT subject_ref, preferences_version, consent_version FROM list_subjects"
        " WHERE tenant_id = $1",
        tenant,
    )
    assert {(r["subject_ref"], r["preferences_version"], r["consent_version"]) for r in rows} == {
        (ref, 2, 1) for ref in refs
    }
    members = await db.fetchval("SELECT count(*) FROM list_members WHERE tenant_id = $1", tenant)
    assert members == 0
    announced = await suppressed_events(db, tenant)
    assert sorted(announced) == sorted(
        (ref, topic, "email", "SUPPRESSION_REASON_UNSUBSCRIBED", "2") for ref in refs
    )


async def _last_stats(proc: Processor) -> dict[str, int] | None:
    found = None
    for line in proc.log_lines():
        if line.get("event") in ("list processor lag", "list processor stopped"):
            found = {k: int(v) for k, v in line.items() if isinstance(v, int)}
    return found
