"""An audited event's trace: recorded in its entry bytes, shown in the entry's metadata, and
an export of traced entries still verifies with the standalone verifier."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from consentry.audit.chain import checkpoints
from consentry.audit.chain.service import append_event
from consentry.audit.consentry_verify import decode_audit_entry, verify_export
from consentry.eventing.envelope import decode, encode
from consentry.eventing.testing import consent_event

from .conftest import audit_api

pytestmark = pytest.mark.integration
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000d7")
KEY = "trace-test-key-0123456789abcdef"
SIGNER = checkpoints.Signer.from_seed(hashlib.sha256(b"trace").digest())
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest_asyncio.fixture
async def client(audit_db: str, db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    """Entry 1 traced, entry 2 not, and a checkpoint over both."""
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    for version, traceparent in ((1, TRACEPARENT), (2, None)):
        event = dataclasses.replace(
            consent_event(str(TENANT), "ef" * 32, version), traceparent=traceparent
        )
        record = encode(event)
        async with db.transaction():
            await append_event(db, decode(record.key, record.value, list(record.headers)))
    async with db.transaction():
        await checkpoints.checkpoint(db, SIGNER, TENANT, every=2, interval=timedelta(hours=1))
    async with audit_api(audit_db, TENANT, KEY) as client:
        yield client


async def test_entries_show_the_trace_their_event_carried(client: httpx.AsyncClient) -> None:
    page = (await client.get("/v1/audit/entries")).json()
    traced, untraced = page["entries"]
    assert traced["metadata"] == {
        "trace": {
            "traceparent": TRACEPARENT,
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "parent_id": "00f067aa0ba902b7",
        }
    }
    assert untraced["metadata"] == {"trace": None}


async def test_an_export_of_traced_entries_verifies_offline(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    keys = (await client.get("/v1/audit/keys")).json()
    export = tmp_path / "export.jsonl"
    export.write_bytes((await client.get("/v1/audit/export")).content)
    report = verify_export(str(export), jwks=keys)
    assert (report.entries, report.checkpoints) == (2, 1)
    # The verifier's entry reader still reads a traced entry's fields (it skips field 10).
    page = (await client.get("/v1/audit/entries")).json()
    fields = decode_audit_entry(base64.b64decode(page["entries"][0]["entry"]))
    assert fields["tenant_id"] == str(TENANT)
