"""The consents API against a real PostgreSQL: ledger, state and outbox in one transaction."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from consentry.consent.settings import ApiSettings
from consentry.eventing import catalogue, testing, topics
from consentry.eventing.envelope import ReceivedEvent

from .conftest import API_KEY, TENANT_ID, publish_first_policy

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


def give(policy: str = "2026-01", **extra: object) -> dict[str, object]:
    return {"status": "given", "policy_version": policy, **extra}


async def outbox_events(db: asyncpg.Connection) -> list[ReceivedEvent]:
    return await testing.outbox_events(db, catalogue.CONSENT_GIVEN, catalogue.CONSENT_WITHDRAWN)


async def test_give_then_read_back(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    response = await client.put(
        "/v1/subjects/alice@example.com/consents/performance",
        json=give(method="banner", source="web-banner"),
    )
    assert response.status_code == 200, response.text
    state = response.json()
    assert state["status"] == "given"
    assert state["subject_version"] == 1
    assert state["method"] == "banner"

    listed = (await client.get("/v1/subjects/alice@example.com/consents")).json()
    assert listed["version"] == 1
    assert [c["purpose"] for c in listed["consents"]] == ["performance"]
    assert len(listed["subject_ref"]) == 64

    (event,) = await outbox_events(db)
    assert event.type is catalogue.CONSENT_GIVEN
    assert event.subject_ref == listed["subject_ref"]
    assert event.tenant_id == str(TENANT_ID)
    assert event.message.decision.subject_version == 1  # type: ignore[attr-defined]
    ledger = await db.fetchval("SELECT count(*) FROM consent_ledger")
    assert ledger == 1


async def test_raw_identifier_is_stored_nowhere(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await client.put("/v1/subjects/Secret.Person@example.com/consents/targeting", json=give())
    dump = []
    for table in ("subjects", "consent_ledger", "consents", "eventing_outbox"):
        rows = await db.fetch(f"SELECT * FROM {table}")
        dump.append(repr([dict(row) for row in rows]).lower())
    assert "secret.person" not in "".join(dump)


async def test_withdraw_bumps_version_and_repeat_is_a_no_op(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    path = "/v1/subjects/u-1/consents/functionality"
    assert (await client.put(path, json=give())).json()["subject_version"] == 1
    withdrawn = await client.put(path, json={"status": "withdrawn", "policy_version": "2026-01"})
    assert withdrawn.json()["status"] == "withdrawn"
    assert withdrawn.json()["subject_version"] == 2
    repeat = await client.put(path, json={"status": "withdrawn", "policy_version": "2026-01"})
    assert repeat.status_code == 200
    assert repeat.json()["subject_version"] == 2
    events = await outbox_events(db)
    assert [e.type.name for e in events] == [
        "consentry.consent.given.v1",
        "consentry.consent.withdrawn.v1",
    ]


async def test_concurrent_changes_to_one_subject_get_gapless_versions(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    purposes = [f"purpose-{n}" for n in range(20)]
    await publish_first_policy(client, extra_purposes=purposes)
    responses = await asyncio.gather(
        *(client.put(f"/v1/subjects/u-2/consents/{p}", json=give()) for p in purposes)
    )
    assert all(r.status_code == 200 for r in responses)
    versions = sorted(r.json()["subject_version"] for r in responses)
    assert versions == list(range(1, 21))
    ledger = await db.fetch("SELECT subject_version FROM consent_ledger ORDER BY subject_version")
    assert [row["subject_version"] for row in ledger] == versions
    outbox_versions = [e.message.decision.subject_version for e in await outbox_events(db)]  # type: ignore[attr-defined]
    assert outbox_versions == versions  # outbox order is per-subject order


@pytest.mark.parametrize(
    ("path", "body", "status", "problem_type"),
    [
        ("/v1/subjects/u/consents/Not_A_Purpose", give(), 422, "validation-error"),
        (
            "/v1/subjects/u/consents/performance",
            {"status": "maybe", "policy_version": "1"},
            422,
            "validation-error",
        ),
        ("/v1/subjects/u/consents/performance", {"status": "given"}, 422, "validation-error"),
        ("/v1/subjects/u/consents/performance", give(subject_version=99), 422, "validation-error"),
        (
            "/v1/subjects/u/consents/performance",
            give(tenant_id=str(TENANT_ID)),
            422,
            "validation-error",
        ),
        ("/v1/subjects/u/consents/performance", give(source="has spaces"), 422, "validation-error"),
        (
            "/v1/subjects/u/consents/performance",
            give(occurred_at="2026-01-01T00:00:00"),
            422,
            "validation-error",
        ),
        (
            "/v1/subjects/u/consents/performance",
            give(occurred_at=(datetime.now(UTC) + timedelta(days=1)).isoformat()),
            422,
            "occurred-in-future",
        ),
        ("/v1/subjects/%20/consents/performance", give(), 422, "validation-error"),
        (
            "/v1/subjects/u/consents/performance",
            give(policy_version="x" * 5000),
            413,
            "payload-too-large",
        ),
    ],
)
async def test_bad_input_gets_a_problem_and_writes_nothing(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    path: str,
    body: object,
    status: int,
    problem_type: str,
) -> None:
    response = await client.put(path, json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == f"urn:consentry:problem:{problem_type}"
    assert problem["status"] == status
    assert problem["title"]
    for table in ("subjects", "consent_ledger", "consents"):
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 0
    # (the dev tenant's directory announcement, made at start-up, is not this request's)
    consent_events = "SELECT count(*) FROM eventing_outbox WHERE topic = $1"
    assert await db.fetchval(consent_events, topics.CONSENT) == 0


async def test_malformed_json_is_a_problem(client: httpx.AsyncClient) -> None:
    response = await client.put(
        "/v1/subjects/u/consents/performance",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["type"] == "urn:consentry:problem:validation-error"


async def test_unknown_subject_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/subjects/nobody/consents")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:consentry:problem:subject-not-found"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}])
async def test_requests_without_a_valid_key_are_401(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    client.headers.pop("Authorization")
    response = await client.get("/v1/subjects/u/consents", headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_x_api_key_header_is_accepted(
    client: httpx.AsyncClient, published_policy: str
) -> None:
    client.headers.pop("Authorization")
    response = await client.put(
        "/v1/subjects/u-3/consents/performance", json=give(), headers={"X-API-Key": API_KEY}
    )
    assert response.status_code == 200


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert "/v1/subjects/{subject_id}/consents/{purpose}" in spec["paths"]
    assert "put" in spec["paths"]["/v1/subjects/{subject_id}/consents/{purpose}"]


def test_dev_key_is_refused_in_production(consent_db: str) -> None:
    with pytest.raises(ValueError, match="refused outside development"):
        ApiSettings(
            database_url=consent_db,
            environment="production",
            dev_api_key="consentry-dev-key",
            dev_tenant_id=TENANT_ID,
        )
