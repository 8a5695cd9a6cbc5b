"""Fixtures for the audit service: a migrated database and events to append."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest_asyncio

from consentry.audit.__main__ import migrations
from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue
from consentry.eventing.envelope import Event, ReceivedEvent, decode, encode
from consentry.eventing.migrations import migrate_dsn


@pytest_asyncio.fixture
async def audit_db(fresh_database: Callable[[str], Awaitable[str]]) -> str:
    dsn = await fresh_database("audit")
    await migrate_dsn(dsn, migrations())
    return dsn


@pytest_asyncio.fixture
async def db(audit_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(audit_db)
    yield conn
    await conn.close()


def received(tenant: uuid.UUID, subject: str, version: int, *, given: bool = True) -> ReceivedEvent:
    """An event as the appender receives it: encoded for the wire, then decoded."""
    decision = consent_pb2.ConsentDecision(
        tenant_id=str(tenant),
        subject_ref=subject,
        purpose="performance",
        policy_version="v1",
        subject_version=version,
    )
    message: consent_pb2.ConsentGiven | consent_pb2.ConsentWithdrawn
    if given:
        event_type, message = catalogue.CONSENT_GIVEN, consent_pb2.ConsentGiven(decision=decision)
    else:
        event_type = catalogue.CONSENT_WITHDRAWN
        message = consent_pb2.ConsentWithdrawn(decision=decision)
    event = Event(event_type, str(tenant), subject, message, "/consentry/consent")
    record = encode(event)
    return decode(record.key, record.value, list(record.headers))
