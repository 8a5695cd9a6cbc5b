"""Publishing policy versions against a real PostgreSQL: the 30-working-day rule, conflicts,
tenant isolation, the `policy.published` event and the cache the write path reads."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from starlette.datastructures import State

from consentry.consent.db import set_tenant
from consentry.consent.policies import service
from consentry.consent.policies.models import PolicyVersionIn
from consentry.consent.policies.workdays import earliest_effective_on, working_days_between
from consentry.eventing import catalogue, topics
from consentry.eventing.db import Pool
from consentry.eventing.testing import outbox_events
from consentry.httpapi.problems import Problem

from .conftest import TENANT_ID, ClientFor, MakeTenant

pytestmark = pytest.mark.integration
STOCKHOLM = ZoneInfo("Europe/Stockholm")
NOTICES = {
    "required": "Cookies we need to run the service.",
    "performance": "With your consent we measure how the service is used.",
    "targeting": "With your consent we show relevant advertising.",
}


def body(version: str, effective_on: date, **notices: str) -> dict[str, Any]:
    texts = notices or NOTICES
    return {
        "version": version,
        "url": f"https://example.com/privacy/{version}",
        "effective_on": effective_on.isoformat(),
        "purposes": [{"purpose": p, "notice": n} for p, n in texts.items()],
    }


def today() -> date:
    return datetime.now(STOCKHOLM).date()


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    slug: str = response.json()["type"]
    return slug.removeprefix("urn:consentry:problem:")


async def versions_stored(db: asyncpg.Connection) -> int:
    """The dev tenant's stored versions (read in its scope: works for any owner role)."""
    async with db.transaction():
        await set_tenant(db, TENANT_ID)
        count: int = await db.fetchval("SELECT count(*) FROM policy_versions")
    return count


async def test_the_first_version_takes_effect_at_once(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    response = await client.post("/v1/policy-versions", json=body("v1", today()))
    assert response.status_code == 201, response.text
    published = response.json()
    assert published["state"] == "effective"
    assert published["changed_purposes"] == []
    assert published["previous_version"] is None
    assert published["announced_on"] == today().isoformat()
    assert published["activated_at"] is None
    start = datetime.combine(today(), datetime.min.time(), tzinfo=STOCKHOLM)
    assert datetime.fromisoformat(published["effective_at"]) == start
    assert {p["purpose"] for p in published["purposes"]} == set(NOTICES)

    (event,) = [e for e in await outbox_events(db) if e.type.topic == topics.CONSENT]
    assert event.type is catalogue.POLICY_PUBLISHED
    assert event.key == f"{TENANT_ID}/policy".encode()
    assert event.subject_ref == "policy"
    policy = event.message.policy  # type: ignore[attr-defined]
    assert (policy.tenant_id, policy.version) == (str(TENANT_ID), "v1")
    assert policy.effective_on == today().isoformat()
    assert list(policy.changed_purposes) == []
    notice = next(p for p in published["purposes"] if p["purpose"] == "performance")
    assert len(notice["notice_sha256"]) == 64
    assert {p.purpose: p.notice_sha256 for p in policy.purposes}["performance"] == notice[
        "notice_sha256"
    ]

    listed = (await client.get("/v1/policy-versions")).json()["versions"]
    assert [v["version"] for v in listed] == ["v1"]
    assert (await client.get("/v1/policy-versions/v1")).json() == published


async def test_a_change_announced_29_working_days_ahead_is_refused_and_30_accepted(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post("/v1/policy-versions", json=body("v1", today()))).status_code == 201
    changed = {**NOTICES, "performance": "We now also measure page load times."}

    too_soon = await client.post(
        "/v1/policy-versions", json=body("v2", today() + timedelta(days=1), **changed)
    )
    assert too_soon.status_code == 422
    assert problem_type(too_soon) == "policy-notice-too-short"
    problem = too_soon.json()
    earliest = date.fromisoformat(problem["earliest_effective_on"])
    assert earliest == earliest_effective_on(today(), "SE")
    assert problem["changed_purposes"] == ["performance"]
    assert earliest.isoformat() in problem["detail"]

    day_before = earliest - timedelta(days=1)
    assert working_days_between(today(), day_before, "SE") == 29
    refused = await client.post("/v1/policy-versions", json=body("v2", day_before, **changed))
    assert refused.status_code == 422
    assert refused.json()["earliest_effective_on"] == earliest.isoformat()

    accepted = await client.post("/v1/policy-versions", json=body("v2", earliest, **changed))
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["state"] == "announced"
    assert accepted.json()["changed_purposes"] == ["performance"]
    assert accepted.json()["previous_version"] == "v1"
    states = {
        v["version"]: v["state"]
        for v in (await client.get("/v1/policy-versions")).json()["versions"]
    }
    assert states == {"v1": "effective", "v2": "announced"}


async def publish_at(
    pool: Pool, now: datetime, version: str, effective_on: date, **notices: str
) -> None:
    await service.publish_version(
        pool,
        tenant_id=TENANT_ID,
        version=PolicyVersionIn.model_validate(body(version, effective_on, **notices)),
        now=now,
    )


async def test_across_christmas_29_working_days_are_refused_and_30_accepted(
    app_state: State,
) -> None:
    pool: Pool = app_state.pool
    await publish_at(pool, datetime(2025, 11, 1, 9, tzinfo=STOCKHOLM), "2025-11", date(2025, 11, 1))
    changed = {**NOTICES, "targeting": "We share data with advertising partners."}
    # Announced Monday 24 November 2025 (00:30 in Stockholm, still Sunday in UTC): the 30
    # working days skip Christmas Eve, Christmas, Boxing Day, New Year's Eve and Day and
    # Epiphany, so the earliest effective day is 14 January 2026, not 6 January.
    announced = datetime(2025, 11, 23, 23, 30, tzinfo=UTC)
    with pytest.raises(Problem) as refused:
        await publish_at(pool, announced, "2026-01", date(2026, 1, 13), **changed)
    assert refused.value.slug == "policy-notice-too-short"
    assert refused.value.extensions["earliest_effective_on"] == "2026-01-14"
    assert refused.value.extensions["announced_on"] == "2025-11-24"

    await publish_at(pool, announced, "2026-01", date(2026, 1, 14), **changed)
    version = await service.get_version(pool, tenant_id=TENANT_ID, version="2026-01", now=announced)
    assert version.changed_purposes == ["targeting"]
    assert version.announced_on == date(2025, 11, 24)
    assert version.effective_at == datetime(2026, 1, 13, 23, tzinfo=UTC)  # midnight, CET


async def test_a_version_without_changes_may_take_effect_at_once(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/policy-versions", json=body("v1", today()))).status_code == 201
    # Same purposes and notices (surrounding whitespace does not count), a new URL.
    same = {purpose: f"  {text}\n" for purpose, text in NOTICES.items()}
    response = await client.post(
        "/v1/policy-versions", json=body("v1.1", today() + timedelta(days=1), **same)
    )
    assert response.status_code == 201, response.text
    assert response.json()["changed_purposes"] == []


async def test_adding_or_removing_a_purpose_is_a_change(client: httpx.AsyncClient) -> None:
    assert (await client.post("/v1/policy-versions", json=body("v1", today()))).status_code == 201
    fewer = {k: v for k, v in NOTICES.items() if k != "targeting"}
    more = {**fewer, "marketing-email": "We send offers by e-mail if you agree."}
    response = await client.post(
        "/v1/policy-versions", json=body("v2", today() + timedelta(days=2), **more)
    )
    assert response.status_code == 422
    assert response.json()["changed_purposes"] == ["marketing-email", "targeting"]


@pytest.mark.parametrize(
    ("second", "status", "slug"),
    [
        (body("v1", date(2031, 1, 1)), 409, "policy-version-exists"),
        (body("v2", date(2031, 1, 1), performance="x", nonsense="y"), 422, "unknown-purpose"),
        (body("v2", date(2020, 1, 1)), 422, "policy-version-out-of-order"),
        (body("v2", date(2030, 1, 1)), 422, "policy-version-out-of-order"),
    ],
)
async def test_conflicting_versions_are_refused(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    second: dict[str, Any],
    status: int,
    slug: str,
) -> None:
    first = await client.post("/v1/policy-versions", json=body("v1", date(2030, 1, 1)))
    assert first.status_code == 201
    response = await client.post("/v1/policy-versions", json=second)
    assert response.status_code == status, response.text
    assert problem_type(response) == slug
    if slug == "unknown-purpose":
        assert response.json()["purposes"] == ["nonsense"]
    assert await versions_stored(db) == 1
    consent_events = "SELECT count(*) FROM eventing_outbox WHERE topic = $1"
    assert await db.fetchval(consent_events, topics.CONSENT) == 1  # v1's event only


async def test_a_later_version_cannot_take_effect_before_it_is_announced(
    client: httpx.AsyncClient,
) -> None:
    first = await client.post("/v1/policy-versions", json=body("v1", today() - timedelta(days=30)))
    assert first.status_code == 201  # a first version may record the notice already in force
    response = await client.post(
        "/v1/policy-versions", json=body("v2", today() - timedelta(days=1))
    )
    assert response.status_code == 422
    assert problem_type(response) == "policy-effective-in-past"


@pytest.mark.parametrize(
    "payload",
    [
        {**body("v1", date(2030, 1, 1)), "url": "not a url"},
        {**body("v1", date(2030, 1, 1)), "purposes": []},
        {**body("v1", date(2030, 1, 1)), "effective_on": "2030-02-30"},
        {**body("v1", date(2030, 1, 1)), "version": "has space"},
        {
            **body("v1", date(2030, 1, 1)),
            "purposes": [{"purpose": "performance", "notice": "a"}] * 2,
        },
        {**body("v1", date(2030, 1, 1)), "purposes": [{"purpose": "performance", "notice": "  "}]},
        {**body("v1", date(2030, 1, 1)), "changed_purposes": []},
        {**body("v1", date(2030, 1, 1)), "url": "https://example.com/" + "a" * 2000},
    ],
)
async def test_invalid_versions_are_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, payload: dict[str, Any]
) -> None:
    response = await client.post("/v1/policy-versions", json=payload)
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    assert await versions_stored(db) == 0


@pytest.mark.parametrize(
    ("column", "value"), [("holiday_country", "XX"), ("timezone", "Mars/Olympus_Mons")]
)
async def test_a_tenant_calendar_that_cannot_be_used_is_a_conflict(
    client: httpx.AsyncClient, db: asyncpg.Connection, column: str, value: str
) -> None:
    assert (await client.get("/v1/purposes")).status_code == 200  # the app created the tenant
    async with db.transaction():
        await set_tenant(db, TENANT_ID)
        updated = await db.execute(
            f"UPDATE tenants SET {column} = $2 WHERE id = $1", TENANT_ID, value
        )
    assert updated == "UPDATE 1"
    response = await client.post("/v1/policy-versions", json=body("v1", today()))
    assert response.status_code == 409
    assert problem_type(response) == "tenant-calendar-invalid"
    assert response.json()[column] == value


async def test_another_tenants_versions_are_not_found(
    client: httpx.AsyncClient, make_tenant: MakeTenant, client_for: ClientFor
) -> None:
    assert (await client.post("/v1/policy-versions", json=body("v1", today()))).status_code == 201
    other = client_for((await make_tenant("Other Org")).key)
    missing = await other.get("/v1/policy-versions/v1")
    assert missing.status_code == 404
    assert problem_type(missing) == "policy-version-not-found"
    assert (await other.get("/v1/policy-versions")).json() == {"versions": []}
    # The same version id is free for another tenant.
    assert (await other.post("/v1/policy-versions", json=body("v1", today()))).status_code == 201


async def test_scopes(make_tenant: MakeTenant, client_for: ClientFor) -> None:
    reader = client_for((await make_tenant("Readers", scopes=["consent:read"])).key)
    refused = await reader.post("/v1/policy-versions", json=body("v1", today()))
    assert refused.status_code == 403
    assert refused.json()["scope"] == "policy:admin"
    admin = client_for((await make_tenant("Admins", scopes=["policy:admin"])).key)
    assert (await admin.post("/v1/policy-versions", json=body("v1", today()))).status_code == 201
    assert (await admin.get("/v1/policy-versions")).status_code == 403


async def test_publishing_refreshes_the_write_paths_cache_at_once(
    client: httpx.AsyncClient, app_state: State
) -> None:
    policies = await app_state.policies.get(TENANT_ID)
    assert policies.current_version() is None
    with pytest.raises(Problem) as unknown:
        policies.check_decision("performance", "v1", withdrawing=False)
    assert unknown.value.slug == "unknown-policy-version"

    assert (await client.post("/v1/policy-versions", json=body("v1", today()))).status_code == 201
    policies = await app_state.policies.get(TENANT_ID)
    assert policies.current_version() == "v1"
    assert policies.check_decision("performance", "v1", withdrawing=False).requires_consent

    created = await client.put(
        "/v1/purposes/research", json={"title": "R", "legal_basis": "consent"}
    )
    assert created.status_code == 201
    assert (await app_state.policies.get(TENANT_ID)).requires_consent("research") is True
