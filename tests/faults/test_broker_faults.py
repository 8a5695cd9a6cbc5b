"""Broker faults at the stack level: the broker loses all its data (recovered by replaying
every outbox), records delivered twice, an older consent version delivered after a newer
one, and poison of every kind: nothing lost, nothing applied twice, the partitions move on."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from consentry.devstack.services import DEV_TENANT_ID
from consentry.eventing import catalogue, topics
from consentry.eventing.envelope import MAX_EVENT_BYTES
from consentry.eventing.testing import Record, collect, header

from .harness import FaultStack, Load, WebhookSink, recover, timing

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]


APPENDER_DLQ = topics.dead_letter_topic("audit-appender")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def broker_stack(
    fault_stack: FaultStack, pg_server_dsn: str, fault_log_dir: Path
) -> AsyncIterator[FaultStack]:
    """A stack that owns its broker: the package's, or (a real broker is configured) one of
    its own, so the data-loss case runs everywhere instead of being skipped."""
    if fault_stack.owns_broker:
        yield fault_stack
        return
    async with FaultStack(
        pg_server_dsn, fault_log_dir / "own-broker", own_broker=True, label="fb"
    ) as stack:
        await stack.prepare_tenant()
        yield stack


async def test_broker_restart_losing_all_data_then_replay(
    broker_stack: FaultStack, webhook_sink: WebhookSink
) -> None:
    stack = broker_stack
    if not webhook_sink.secret:
        await webhook_sink.register(stack)
    form = timing()
    load = await Load.prepare(stack)
    # Everything the broker ever held is lost: replay from before the stack's first event.
    since = stack.started_at
    async with load.running():
        await load.run_for(form.before_fault)
        fault_at = time.monotonic()
        await stack.lose_broker()
        await load.run_for(form.after_fault)
    outputs = await stack.replay(since)
    assert any(not text.startswith("0 ") for text in outputs.values()), outputs
    await stack.wait_running()
    row = await recover(stack, load, "broker loses all data + replay", fault_at, sink=webhook_sink)
    assert load.accepted
    assert row.ok, row.failures
    assert (row.lost, row.duplicated) == (0, 0)


async def _records(stack: FaultStack, topic: str, wanted: int) -> list[Record]:
    """At least `wanted` records of `topic` (read from the earliest offset)."""
    return await collect(stack.bootstrap, topic, lambda kept: len(kept) >= wanted, seconds=60)


def _padded(value: bytes, size: int) -> bytes:
    """`value` plus an unknown length-delimited protobuf field (number 1000) of `size` bytes."""
    length, varint = size, bytearray()
    while length >= 0x80:
        varint.append(length & 0x7F | 0x80)
        length >>= 7
    varint.append(length)
    return value + bytes([0xC2, 0x3E]) + bytes(varint) + b"x" * size


async def _produce(
    stack: FaultStack, records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


async def _audited(stack: FaultStack, event_id: str) -> bool:
    conn = await asyncpg.connect(stack.database_dsn("audit"))
    try:
        found = await conn.fetchval(
            "SELECT count(*) FROM audit_entries WHERE event_id::text = $1", event_id
        )
    finally:
        await conn.close()
    return bool(found)


async def test_duplicate_delivery_has_no_second_effect(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    form = timing()
    load = await Load.prepare(fault_stack)
    async with load.running():
        await load.run_for(form.before_fault)
        await load.wait_accepted(10)
    # Let the first deliveries land, then deliver every consumed record of the consent and
    # rights topics (requests and answers) again, byte for byte.
    settled = await recover(fault_stack, load, "settle", time.monotonic(), record=False)
    assert settled.ok, settled.failures
    hooks_before = {d.webhook_id for d in registered_sink.deliveries}
    again = [
        *await _records(fault_stack, topics.CONSENT, 1),
        *await _records(fault_stack, topics.RIGHTS, 1),
        *await _records(fault_stack, topics.RIGHTS_ANSWERS, 1),
    ]
    fault_at = time.monotonic()
    await _produce(
        fault_stack,
        [(r.topic, r.key, r.value, list(r.headers or ())) for r in again if r.value is not None],
    )
    async with load.running():
        await load.run_for(form.after_fault)
    row = await recover(fault_stack, load, "duplicate delivery", fault_at, sink=registered_sink)
    assert row.ok, row.failures
    assert (row.lost, row.duplicated) == (0, 0)
    # A re-delivered rights request must not make a second notice (a new webhook-id).
    requested = {
        str(d.notice.get("request_id"))
        for d in registered_sink.deliveries
        if d.webhook_id in hooks_before
    }
    new = [
        d
        for d in registered_sink.deliveries
        if d.webhook_id not in hooks_before and str(d.notice.get("request_id")) in requested
    ]
    assert new == []


async def test_out_of_order_consent_version_is_ignored(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    load = await Load.prepare(fault_stack)
    member = load.members[0]
    # The member withdraws marketing e-mail (version 2) ...
    async with load.running(rate=5):
        await load.withdraw(member)
        await load.wait_accepted(1)
    assert member.fate == "consent-withdrawn"
    settled = await recover(fault_stack, load, "settle", time.monotonic(), record=False)
    assert settled.ok, settled.failures
    # ... then its older "given" (version 1) is delivered again, after the newer one.
    key = f"{DEV_TENANT_ID}/{member.ref}".encode()
    history = await collect(
        fault_stack.bootstrap,
        topics.CONSENT,
        lambda kept: (
            any(header(r, "ce_type") == catalogue.CONSENT_WITHDRAWN.name for r in kept)
            and len(kept) >= 2
        ),
        keep=lambda r: r.key == key,
        seconds=60,
    )
    stale = [r for r in history if header(r, "ce_type") == catalogue.CONSENT_GIVEN.name]
    assert stale, [header(r, "ce_type") for r in history]
    # A new event id: an inbox would drop a mere re-delivery; only the version may refuse it.
    fresh = str(uuid.uuid4())
    fault_at = time.monotonic()
    await _produce(
        fault_stack,
        [
            (
                topics.CONSENT,
                stale[0].key,
                stale[0].value or b"",
                [(n, bytes(v)) for n, v in stale[0].headers or () if n != "ce_id"]
                + [("ce_id", fresh.encode())],
            )
        ],
    )
    # It was delivered (the appender took it in the chain) before the verdicts are read.
    async with asyncio.timeout(60):
        while not await _audited(fault_stack, fresh):
            await asyncio.sleep(0.2)
    # The preferences follower must keep the member suppressed (c), nothing doubled (a).
    row = await recover(fault_stack, load, "out-of-order consent version", fault_at)
    assert row.ok, row.failures


async def test_poison_of_every_kind_is_dead_lettered_and_partitions_move_on(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    form = timing()
    load = await Load.prepare(fault_stack)
    real = (await _records(fault_stack, topics.CONSENT, 1))[0]
    assert real.value is not None
    assert real.key is not None
    marker = secrets.token_hex(6)

    def headers(drop: str = "", **replace: str) -> list[tuple[str, bytes]]:
        kept = [
            (name, bytes(value))
            for name, value in (real.headers or ())
            if name != drop and name not in replace and name != "ce_id"
        ]
        return [
            *kept,
            *((name, value.encode()) for name, value in replace.items()),
            ("ce_id", str(uuid.uuid4()).encode()),
            ("x-fault-marker", marker.encode()),
        ]

    poison = {
        "not protobuf": (real.key, b"\xff\x00 not protobuf at all", headers()),
        "unknown type": (real.key, real.value, headers(ce_type="consentry.consent.nonsense.v1")),
        "wrong type": (real.key, real.value, headers(ce_type=catalogue.ERASURE_REQUESTED.name)),
        "missing headers": (real.key, real.value, headers(drop="ce_source")),
        # A valid event padded with an unknown protobuf field (it would parse) past the limit
        "oversize": (real.key, _padded(real.value, MAX_EVENT_BYTES + 1), headers()),
    }
    async with load.running():
        await load.run_for(form.before_fault)
        fault_at = time.monotonic()
        await _produce(
            fault_stack,
            [(topics.CONSENT, key, value, hdrs) for key, value, hdrs in poison.values()],
        )
        await load.run_for(form.after_fault)
    dead = await collect(
        fault_stack.bootstrap,
        APPENDER_DLQ,
        lambda kept: len(kept) >= len(poison),
        keep=lambda r: header(r, "x-fault-marker") == marker,
        seconds=90,
    )
    reasons = sorted(header(r, "dlq.reason") for r in dead)
    assert len(dead) == len(poison), reasons
    assert all(reasons), reasons
    assert "oversize" in reasons, reasons
    # The load after the poison reached the chain: the partitions kept moving.
    row = await recover(
        fault_stack, load, "poison (5 kinds) -> DLQ", fault_at, sink=registered_sink
    )
    assert row.ok, row.failures
    assert (row.lost, row.duplicated) == (0, 0)
