"""Access exports: every service's part sealed to the request's key, assembled once the
request completes, downloadable by a short-lived signed link (no API key)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from starlette.datastructures import State

from consentry.consent.rights.export import ExportLinks
from consentry.consent.rights.fanout import rights_pass
from consentry.consent.rights.tracker import RightsTracker
from consentry.consent.sealing import Sealer
from consentry.consent.tenants.service import pseudonymise
from consentry.eventing import catalogue
from consentry.eventing.db import Pool
from consentry.eventing.envelope import Event
from consentry.eventing.sealing import open_part, seal_part
from consentry.eventing.testing import outbox_events
from consentry.rights.v1 import rights_pb2

from .conftest import TENANT_ID, ClientFor, MakeTenant
from .test_rights_support import apply, file, jwks_of, messages, stamp, verify_certificate

pytestmark = pytest.mark.integration
BASE = "/v1/rights-requests"
PREFERENCES_PART = {"service": "preferences", "topics": {"newsletter": {"email": "opted-in"}}}


@pytest_asyncio.fixture
async def pool(app_dsn: str) -> AsyncIterator[Pool]:
    """A pool logged in as the application's role (row-level security applies)."""
    created = await asyncpg.create_pool(app_dsn, min_size=1, max_size=4)
    assert created is not None
    yield created
    await created.close()


def part_ready(request_id: str, subject_ref: str, public_key: bytes, part: dict[str, Any]) -> Event:
    """The preferences service's answer: its part sealed to the request's export key."""
    sealed = seal_part(
        public_key,
        json.dumps(part).encode(),
        tenant_id=TENANT_ID,
        request_id=uuid.UUID(request_id),
        service="preferences",
    )
    message = rights_pb2.AccessPartReady(
        tenant_id=str(TENANT_ID),
        subject_ref=subject_ref,
        request_id=request_id,
        service="preferences",
        sealed_part=sealed,
        ready_at=stamp(),
    )
    return Event(
        catalogue.ACCESS_PART_READY, str(TENANT_ID), subject_ref, message, "/consentry/preferences"
    )


async def test_an_access_request_yields_a_downloadable_export(
    client: httpx.AsyncClient,
    client_for: ClientFor,
    published_policy: str,
    pool: Pool,
    db: asyncpg.Connection,
    sealer: Sealer,
    subject_key: bytes,
    app_state: State,
) -> None:
    for purpose, status in (("performance", "given"), ("targeting", "withdrawn")):
        response = await client.put(
            f"/v1/subjects/alice/consents/{purpose}",
            json={"status": status, "policy_version": "2026-01", "source": "web-banner"},
        )
        assert response.status_code == 200, response.text
    alice = pseudonymise(subject_key, "alice")
    filed = await file(client, kind="access", requester="subject", subject_id="alice")
    rid = filed["id"]
    await client.post(f"{BASE}/{rid}/identity", json={"verified": True})
    await rights_pass(pool, now=datetime.now(UTC))

    (requested,) = messages(
        await outbox_events(db, catalogue.ACCESS_REQUESTED), rights_pb2.AccessRequested
    )
    own = await outbox_events(db, catalogue.ACCESS_PART_READY)
    (own_part,) = messages(own, rights_pb2.AccessPartReady)
    assert own_part.service == "consent"
    assert own_part.subject_ref == alice
    assert b"performance" not in own_part.sealed_part  # sealed, not readable on the topic

    tracker = RightsTracker(sealer)
    await apply(pool, tracker, own)
    early = await client.get(f"{BASE}/{rid}/export")
    assert early.status_code == 409
    assert early.json()["type"] == "urn:consentry:problem:export-not-ready"
    await apply(
        pool, tracker, [part_ready(rid, alice, requested.export_public_key, PREFERENCES_PART)]
    )
    status = (await client.get(f"{BASE}/{rid}")).json()
    assert status["state"] == "completed"  # access requests await no recipients
    claims = verify_certificate(
        status["certificate"], await jwks_of(client, TENANT_ID), str(TENANT_ID)
    )
    assert {s["service"]: s["subjects"] for s in claims["services"]} == {
        "consent": 1,
        "preferences": 1,
    }
    stored = await db.fetch("SELECT sealed_part FROM rights_subject_services")
    assert all(b"performance" not in r["sealed_part"] for r in stored)
    assert all(b"newsletter" not in r["sealed_part"] for r in stored)

    link = await client.get(f"{BASE}/{rid}/export")
    assert link.status_code == 200, link.text
    url = link.json()["url"]
    expires = datetime.fromisoformat(link.json()["expires_at"])
    assert timedelta(minutes=14) < expires - datetime.now(UTC) <= timedelta(minutes=15)
    download = await client_for(None).get(url)  # the link alone, no API key
    assert download.status_code == 200, download.text
    assert download.headers["cache-control"] == "no-store"
    exported = download.json()
    assert exported["format"] == "consentry-access-export-v1"
    assert exported["request"]["id"] == rid
    (subject,) = exported["subjects"]
    assert subject["subject_ref"] == alice
    consent = subject["services"]["consent"]
    assert {c["purpose"]: c["status"] for c in consent["consents"]} == {
        "performance": "given",
        "targeting": "withdrawn",
    }
    assert [p["purpose"] for p in consent["proof"]] == ["performance", "targeting"]
    assert consent["proof"][0]["policy_url"] == published_policy
    assert consent["proof"][0]["source"] == "web-banner"
    assert [r["id"] for r in consent["rights_requests"]] == [rid]
    assert subject["services"]["preferences"] == PREFERENCES_PART

    # An altered link, and one past its 15 minutes, lead nowhere.
    tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    refused = await client_for(None).get(tampered)
    assert refused.status_code == 404
    assert refused.json()["type"] == "urn:consentry:problem:export-link-invalid"
    links: ExportLinks = app_state.export_links
    old, _ = links.issue(TENANT_ID, uuid.UUID(rid), datetime.now(UTC) - timedelta(minutes=16))
    expired = await client_for(None).get(f"/v1/rights-exports/{old}")
    assert expired.status_code == 410
    assert expired.json()["type"] == "urn:consentry:problem:export-link-expired"


async def test_only_a_completed_access_request_of_the_tenant_has_an_export(
    client: httpx.AsyncClient, client_for: ClientFor, make_tenant: MakeTenant
) -> None:
    erasure = await file(client, kind="erasure", requester="tenant", subject_id="x")
    response = await client.get(f"{BASE}/{erasure['id']}/export")
    assert response.status_code == 409
    other = client_for((await make_tenant("Other")).key)
    assert (await other.get(f"{BASE}/{erasure['id']}/export")).status_code == 404


def test_a_part_opens_only_with_its_requests_key_and_binding() -> None:
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    request_id = uuid.uuid4()
    sealed = seal_part(
        public, b'{"a": 1}', tenant_id=TENANT_ID, request_id=request_id, service="preferences"
    )
    opened = open_part(
        private, sealed, tenant_id=TENANT_ID, request_id=request_id, service="preferences"
    )
    assert opened == b'{"a": 1}'
    for tenant, request, service, key in (
        (TENANT_ID, request_id, "consent", private),  # another service's part
        (TENANT_ID, uuid.uuid4(), "preferences", private),  # another request's
        (uuid.uuid4(), request_id, "preferences", private),  # another tenant's
        (TENANT_ID, request_id, "preferences", X25519PrivateKey.generate()),  # another key
    ):
        with pytest.raises(ValueError, match="does not open"):
            open_part(key, sealed, tenant_id=tenant, request_id=request, service=service)
