"""Where the audit appender's ceiling is: the database alone, and the Python work per entry.

Run by `bench.audit_throughput` on its PostgreSQL server, in a database of its own:

- `audit_append_batch()` called in a loop with prepared arrays (one transaction per batch);
- the appender's whole transaction without Kafka, for events already decoded, one after the
  other on one connection (no pipelining, no lanes): `prepare` (entry bytes, event ids),
  `append_prepared` (the batch function, the EntryAppended outbox rows) and the checkpoints
  of the batch's tenants (`checkpoint_held`);
- the per-record path (a savepoint and `append_prepared` per event) for comparison;
- the appender's Python work per entry, alone: decoding a record, building the entry bytes,
  the EntryAppended outbox row; with, for comparison, the general-purpose code the appender
  no longer runs per entry (`envelope.decode`, `outbox.columns` of the event).
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
from pydantic import SecretStr

from bench import cpu
from consentry.audit.__main__ import migrations
from consentry.audit.chain import checkpoints, events
from consentry.audit.chain.service import append_prepared, entry_bytes, prepare
from consentry.audit.records import decode_record
from consentry.audit.settings import DEV_SIGNING_KEY, seed_bytes
from consentry.devstack.postgres import drop_database, ensure_database, with_user
from consentry.eventing import outbox
from consentry.eventing.envelope import ReceivedEvent, decode, encode
from consentry.eventing.migrations import migrate_dsn
from consentry.eventing.testing import consent_event

APP_ROLE = "consentry_audit_app"
PER_RECORD_ENTRIES = 2_000
_APPEND_BATCH = "SELECT * FROM audit_append_batch($1, $2, $3, $4, $5)"

Wire = tuple[bytes, bytes, list[tuple[str, bytes | None]]]


def _wire_events(count: int, tenants: int) -> list[Wire]:
    ids = [str(uuid.uuid4()) for _ in range(tenants)]
    wire: list[Wire] = []
    for index in range(count):
        record = encode(consent_event(ids[index % tenants], secrets.token_hex(32), 1))
        assert record.key is not None
        wire.append((record.key, record.value, list(record.headers)))
    return wire


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _per_entry_us(items: Sequence[Any], work: Callable[[Any], object]) -> float:
    started = time.perf_counter()
    for item in items:
        work(item)
    return round((time.perf_counter() - started) / len(items) * 1e6, 1)


def python_costs(wire: Sequence[Wire]) -> dict[str, float]:
    """µs per entry of the appender's Python steps, measured alone (and, for comparison, of
    the general-purpose code they replace)."""
    received = [decode(*item) for item in wire]
    entries = [entry_bytes(event) for event in received]
    tenants = [event.tenant_id for event in received]
    fake = bytes(32)

    def published(_: object) -> object:
        envelopes = events.entry_appended_envelopes(tenants)
        slots = [envelopes.slots[tenant] for tenant in tenants]
        return slots, [
            events.entry_appended_payload(tenant, 1, entry, fake, fake)
            for tenant, entry in zip(tenants, entries, strict=True)
        ]

    def appended_event(item: tuple[ReceivedEvent, bytes]) -> object:
        return outbox.columns([events.entry_appended(item[0].tenant_id, 1, item[1], fake, fake)])

    return {
        "decode record (records.decode_record)": _per_entry_us(
            wire, lambda item: decode_record(*item)
        ),
        "entry bytes (AuditEntry)": _per_entry_us(received, entry_bytes),
        "EntryAppended outbox row (its payload; the envelope once per tenant)": round(
            _per_entry_us([None], published) / len(received), 1
        ),
        "for comparison: envelope.decode": _per_entry_us(wire, lambda item: decode(*item)),
        "for comparison: EntryAppended event through outbox.columns": _per_entry_us(
            list(zip(received, entries, strict=True)), appended_event
        ),
    }


async def _batch_function(
    conn: asyncpg.Connection, received: list[ReceivedEvent], batch: int
) -> float:
    arrays = []
    for chunk in _chunks(received, batch):
        arrays.append(
            (
                [event.tenant_id for event in chunk],
                [event.id for event in chunk],
                [event.type.name for event in chunk],
                [event.subject_ref for event in chunk],
                [entry_bytes(event) for event in chunk],
            )
        )
    started = time.perf_counter()
    for args in arrays:
        async with conn.transaction():
            await conn.fetch(_APPEND_BATCH, *args)
    return time.perf_counter() - started


async def _appender_transactions(
    conn: asyncpg.Connection, received: list[ReceivedEvent], batch: int
) -> float:
    signer = checkpoints.Signer.from_seed(seed_bytes(SecretStr(DEV_SIGNING_KEY)))
    await checkpoints.register(conn, signer)
    interval = timedelta(seconds=10)
    started = time.perf_counter()
    for chunk in _chunks(received, batch):
        prepared = prepare(chunk)
        async with conn.transaction():
            await append_prepared(conn, prepared)
            tenants = sorted({uuid.UUID(event.tenant_id) for event in chunk})
            await checkpoints.checkpoint_held(conn, signer, tenants, every=1000, interval=interval)
    return time.perf_counter() - started


async def _per_record(conn: asyncpg.Connection, received: list[ReceivedEvent], batch: int) -> float:
    started = time.perf_counter()
    for chunk in _chunks(received, batch):
        async with conn.transaction():
            for event in chunk:
                async with conn.transaction():
                    await append_prepared(conn, prepare([event]))
    return time.perf_counter() - started


async def measure(server_dsn: str, entries: int, batch: int, tenants: int) -> dict[str, Any]:
    """Every figure of this module, in a database created and dropped here."""
    name = f"bench_ceiling_{secrets.token_hex(3)}"
    dsn = await ensure_database(server_dsn, name)
    try:
        await migrate_dsn(dsn, migrations())
        wire = _wire_events(2 * entries + PER_RECORD_ENTRIES, tenants)
        costs = python_costs(wire[:20_000])
        received = [decode(*item) for item in wire]
        conn = await asyncpg.connect(with_user(dsn, APP_ROLE))
        before = cpu.snapshot()
        try:
            alone = await _batch_function(conn, received[:entries], batch)
            whole = await _appender_transactions(conn, received[entries : 2 * entries], batch)
            each = await _per_record(conn, received[2 * entries :], batch)
        finally:
            await conn.close()
        # This process and one PostgreSQL backend take turns: about one core of the machine.
        busy = cpu.machine(before, cpu.snapshot())["busy"]
    finally:
        await drop_database(server_dsn, name)
    return {
        "entries": entries,
        "batch": batch,
        "tenants": tenants,
        "batch_function_entries_per_s": round(entries / alone),
        "appender_transaction_entries_per_s": round(entries / whole),
        "per_record_entries": PER_RECORD_ENTRIES,
        "per_record_entries_per_s": round(PER_RECORD_ENTRIES / each),
        "python_us_per_entry": costs,
        "machine_busy_percent": busy,
        "cores": len(os.sched_getaffinity(0)),
    }


def markdown(ceiling: dict[str, Any], level: int = 2) -> list[str]:
    """The ceiling as markdown lines; `level` is the heading level of its title."""
    costs = ceiling["python_us_per_entry"]
    cores = ceiling["cores"]
    competed = ceiling["machine_busy_percent"] > 100 / cores + 15
    return [
        f"{'#' * level} Where the ceiling is (no Kafka; {ceiling['entries']:,} entries, batches of "
        f"{ceiling['batch']}, {ceiling['tenants']} tenants, one connection)",
        "",
        "| path | entries/s |",
        "|---|---:|",
        f"| `audit_append_batch()` alone, prepared arrays | "
        f"{ceiling['batch_function_entries_per_s']:,} |",
        "| the appender's transaction, one batch after the other: entry bytes + batch "
        "function + EntryAppended outbox rows + checkpoints | "
        f"{ceiling['appender_transaction_entries_per_s']:,} |",
        f"| per-record path (a savepoint + the batch function and outbox row per event; "
        f"{ceiling['per_record_entries']:,} entries) | "
        f"{ceiling['per_record_entries_per_s']:,} |",
        "",
        "The appender's Python work per entry, alone (µs): "
        + ", ".join(f"{step} {value}" for step, value in costs.items())
        + ".",
        "",
        f"The machine was {ceiling['machine_busy_percent']:.0f} % busy (all cores) during these"
        f" loops; they use about {100 / cores:.0f} % (one core of {cores})"
        + (": **other work competed, the figures are low**." if competed else "."),
    ]
