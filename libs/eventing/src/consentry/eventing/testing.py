"""Helpers for tests that read what was published (used by the test-suites, not by services)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue
from consentry.eventing.db import Connection
from consentry.eventing.directory import DEV_DIRECTORY_KEY, subject_key_context
from consentry.eventing.envelope import Event, ReceivedEvent, decode, encode
from consentry.eventing.sealing import Sealer
from consentry.tenant.v1 import tenant_pb2

Record: TypeAlias = ConsumerRecord[bytes, bytes]
# A record as it is sent: key and value, with headers or without.
RawRecord: TypeAlias = tuple[bytes, bytes] | tuple[bytes, bytes, list[tuple[str, bytes]]]
S = TypeVar("S")


async def collect(
    bootstrap: str,
    topic: str,
    done: Callable[[list[Record]], bool],
    *,
    keep: Callable[[Record], bool] = lambda _: True,
    seconds: float = 20.0,
) -> list[Record]:
    """Read `topic` from the earliest offset (every partition, no consumer group: nothing to
    join or commit) until `done(kept)` or timeout.

    Raises TimeoutError naming how many records were kept when `done` never became true.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    kept: list[Record] = []
    try:
        async with asyncio.timeout(seconds):
            while not done(kept):
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    kept.extend(record for record in records if keep(record))
    except TimeoutError:
        raise TimeoutError(
            f"{topic}: condition not met after {seconds}s, kept {len(kept)}"
        ) from None
    finally:
        await consumer.stop()
    return kept


def as_polled(event: Event, *, partition: int, offset: int) -> Record:
    """`event` as a consumer's poll returns it from `partition` at `offset`."""
    record = encode(event)
    return ConsumerRecord(
        topic=record.topic,
        partition=partition,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=record.key,
        value=record.value,
        checksum=None,
        serialized_key_size=len(record.key or b""),
        serialized_value_size=len(record.value),
        headers=list(record.headers),
    )


def header(record: Record, name: str) -> str:
    """A record header's value as text ('' when absent)."""
    for key, value in record.headers or ():
        if key == name:
            return bytes(value).decode()
    return ""


def consent_event(
    tenant_id: str,
    subject_ref: str,
    version: int,
    *,
    given: bool = True,
    purpose: str = "performance",
    source: str = "/consentry/test",
) -> Event:
    """A valid consent given/withdrawn event for tests."""
    decision = consent_pb2.ConsentDecision(
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        purpose=purpose,
        policy_version="v1",
        subject_version=version,
    )
    message: consent_pb2.ConsentGiven | consent_pb2.ConsentWithdrawn
    if given:
        event_type, message = catalogue.CONSENT_GIVEN, consent_pb2.ConsentGiven(decision=decision)
    else:
        event_type = catalogue.CONSENT_WITHDRAWN
        message = consent_pb2.ConsentWithdrawn(decision=decision)
    return Event(event_type, tenant_id, subject_ref, message, source)


_OUTBOX = "SELECT message_key, headers, payload FROM eventing_outbox ORDER BY position"
_OUTBOX_OF_TYPES = """
SELECT message_key, headers, payload FROM eventing_outbox
WHERE event_type = ANY($1::text[]) ORDER BY position
"""


async def outbox_events(conn: Connection, *types: catalogue.EventType) -> list[ReceivedEvent]:
    """The events in a service database's outbox, decoded as a consumer would, in order
    (only those of `types` when given)."""
    if types:
        rows = await conn.fetch(_OUTBOX_OF_TYPES, [t.name for t in types])
    else:
        rows = await conn.fetch(_OUTBOX)
    return [
        decode(
            row["message_key"],
            row["payload"],
            [(name, value.encode()) for name, value in json.loads(row["headers"]).items()],
        )
        for row in rows
    ]


@contextlib.asynccontextmanager
async def running(
    worker: Callable[[S, asyncio.Event], Coroutine[Any, Any, None]], settings: S
) -> AsyncIterator[None]:
    """`worker(settings, stop)` (a process's worker, e.g. a directory follower) as a task in
    this process while the block runs; then stopped as by SIGTERM. A crash of the worker
    fails the block's exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(worker(settings, stop))
    try:
        yield
    finally:
        stop.set()
        await task


async def produce(
    bootstrap: str,
    events: Iterable[Event | RawRecord],
    *,
    topic: str | None = None,
    partition: int | None = None,
) -> None:
    """Publish `events` one after the other (acks=all), as a relay would: each to its event
    type's topic, or all to `topic`. A `RawRecord` (key, value and optional headers; `topic`
    needed) is sent as it is, for the poison a consumer must cope with."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for item in events:
            headers: list[tuple[str, bytes]] | None
            if isinstance(item, Event):
                record = encode(item)
                key, value, headers = record.key, record.value, list(record.headers)
                destination = topic or record.topic
            else:
                key, value, headers = item[0], item[1], list(item[2]) if len(item) == 3 else None
                if topic is None:
                    raise ValueError("a raw record needs a topic")
                destination = topic
            await producer.send_and_wait(
                destination, value, key=key, partition=partition, headers=headers
            )
    finally:
        await producer.stop()


# --- The tenant directory (ADR 0008) as the consent service announces it, for the tests of
# the services that follow it (`consentry.eventing.replica`).
DIRECTORY = Sealer(base64.b64decode(DEV_DIRECTORY_KEY))  # the test settings' directory key
DIRECTORY_SOURCE = "/consentry/consent"


def stamp(moment: datetime) -> Timestamp:
    """A protobuf timestamp of `moment`."""
    value = Timestamp()
    value.FromDatetime(moment)
    return value


def directory_event(
    tenant_id: uuid.UUID, event_type: catalogue.EventType, message: Message, *, event_id: str = ""
) -> Event:
    """A directory event as the consent service's outbox would publish it."""
    return Event(
        event_type,
        str(tenant_id),
        catalogue.TENANT_SUBJECT,
        message,
        DIRECTORY_SOURCE,
        id=event_id or str(uuid.uuid4()),
    )


def tenant_provisioned(
    tenant_id: uuid.UUID,
    subject_key: bytes,
    *,
    name: str = "Acme Learning AB",
    wrapper: Sealer = DIRECTORY,
    context_of: uuid.UUID | None = None,
    at: datetime = datetime(2026, 11, 1, tzinfo=UTC),
) -> Event:
    """`TenantProvisioned` with `subject_key` wrapped by `wrapper` for `context_of` (by
    default: the directory key, for this tenant)."""
    wrapped = wrapper.seal(subject_key, context=subject_key_context(context_of or tenant_id))
    message = tenant_pb2.TenantProvisioned(
        tenant_id=str(tenant_id), name=name, wrapped_subject_key=wrapped, provisioned_at=stamp(at)
    )
    return directory_event(tenant_id, catalogue.TENANT_PROVISIONED, message)


def new_api_key() -> tuple[str, str]:
    """A key id and the full key (`csk_<id>_<secret>`), as the consent service makes them."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower()
    return key_id, f"csk_{key_id}_{secrets.token_urlsafe(32)}"


def api_key_issued(tenant_id: uuid.UUID, key: str, scopes: Iterable[str], *, at: datetime) -> Event:
    """`ApiKeyIssued` of the full key `key` (its id, scopes and the SHA-256 of its secret)."""
    key_id, secret = key.removeprefix("csk_").split("_", 1)
    message = tenant_pb2.ApiKeyIssued(
        tenant_id=str(tenant_id),
        key_id=key_id,
        scopes=sorted(scopes),
        secret_sha256=hashlib.sha256(secret.encode()).digest(),
        issued_at=stamp(at),
    )
    return directory_event(tenant_id, catalogue.API_KEY_ISSUED, message)


def api_key_revoked(tenant_id: uuid.UUID, key_id: str, *, at: datetime) -> Event:
    """`ApiKeyRevoked` of the key id `key_id`."""
    message = tenant_pb2.ApiKeyRevoked(
        tenant_id=str(tenant_id), key_id=key_id, revoked_at=stamp(at)
    )
    return directory_event(tenant_id, catalogue.API_KEY_REVOKED, message)
