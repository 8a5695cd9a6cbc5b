"""Capturing consent: several purposes at once, required purposes, GPC, children, proof."""

from __future__ import annotations

import asyncio

import asyncpg
import httpx
import pytest

from consentry.eventing import catalogue
from consentry.eventing.testing import outbox_events

pytestmark = pytest.mark.integration
POLICY = "2026-01"
BANNER = {
    "performance": "given",
    "functionality": "given",
    "targeting": "withdrawn",
    "marketing-email": "given",
}


def capture(purposes: dict[str, str], **extra: object) -> dict[str, object]:
    return {"purposes": purposes, "policy_version": POLICY, "method": "banner", **extra}


async def counts(db: asyncpg.Connection) -> tuple[int, int, int]:
    return (
        await db.fetchval("SELECT count(*) FROM consent_ledger"),
        await db.fetchval("SELECT count(*) FROM consents"),
        await db.fetchval(
            "SELECT count(*) FROM eventing_outbox WHERE event_type = ANY($1::text[])",
            [catalogue.CONSENT_GIVEN.name, catalogue.CONSENT_WITHDRAWN.name],
        ),
    )


async def outbox_types(db: asyncpg.Connection) -> list[tuple[str, str, int]]:
    events = await outbox_events(db, catalogue.CONSENT_GIVEN, catalogue.CONSENT_WITHDRAWN)
    return [
        (
            e.type.name,
            e.message.decision.purpose,  # type: ignore[attr-defined]
            e.message.decision.method,  # type: ignore[attr-defined]
        )
        for e in events
    ]


async def test_several_purposes_in_one_call_one_receipt(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    response = await client.post(
        "/v1/subjects/user-1/consents", json=capture(BANNER, source="web-banner")
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {c["purpose"]: c["status"] for c in body["consents"]} == BANNER
    assert body["subject_version"] == 4
    assert sorted(c["subject_version"] for c in body["consents"]) == [1, 2, 3, 4]
    assert body["receipt"].count(".") == 2
    assert body["gpc_applied"] is False
    assert await counts(db) == (4, 4, 4)
    receipt_ids = await db.fetch("SELECT DISTINCT receipt_id FROM consent_ledger")
    assert [str(r["receipt_id"]) for r in receipt_ids] == [body["receipt_id"]]

    again = await client.post("/v1/subjects/user-1/consents", json=capture(BANNER))
    assert again.status_code == 200
    assert again.json()["subject_version"] == 4  # nothing changed, nothing recorded
    assert await counts(db) == (4, 4, 4)


async def test_withdrawing_required_is_refused_and_writes_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    await client.post("/v1/subjects/user-2/consents", json=capture({"performance": "given"}))
    before = await counts(db)
    response = await client.post(
        "/v1/subjects/user-2/consents",
        json=capture({"performance": "withdrawn", "required": "withdrawn"}),
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:consentry:problem:purpose-not-withdrawable"
    assert await counts(db) == before  # the performance withdrawal was not recorded either
    single = await client.put(
        "/v1/subjects/user-2/consents/required",
        json={"status": "withdrawn", "policy_version": POLICY},
    )
    assert single.status_code == 422
    assert await counts(db) == before


async def test_unknown_purpose_and_policy_version_are_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    unknown = await client.post("/v1/subjects/u/consents", json=capture({"astrology": "given"}))
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "urn:consentry:problem:unknown-purpose"
    version = await client.post(
        "/v1/subjects/u/consents", json=capture({"performance": "given"}, policy_version="1999")
    )
    assert version.status_code == 422
    assert version.json()["type"] == "urn:consentry:problem:unknown-policy-version"
    assert await counts(db) == (0, 0, 0)


async def test_gpc_header_withdraws_sale_and_sharing(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    await client.post(
        "/v1/subjects/user-3/consents",
        json=capture({"targeting": "given", "joint-marketing": "given"}),
    )
    response = await client.post(
        "/v1/subjects/user-3/consents",
        json=capture({"performance": "given"}),
        headers={"Sec-GPC": "1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["gpc_applied"] is True
    states = {c["purpose"]: (c["status"], c["method"]) for c in body["consents"]}
    assert states == {
        "performance": ("given", "banner"),
        "targeting": ("withdrawn", "gpc"),
        "joint-marketing": ("withdrawn", "gpc"),
    }
    # A later opt-in through the same GPC-carrying channel does not override it.
    opt_in = await client.put(
        "/v1/subjects/user-3/consents/targeting",
        json={"status": "given", "policy_version": POLICY},
        headers={"Sec-GPC": "1"},
    )
    assert opt_in.status_code == 200
    assert (opt_in.json()["status"], opt_in.json()["method"]) == ("withdrawn", "gpc")
    body_flag = await client.post(
        "/v1/subjects/user-3/consents", json=capture({"joint-marketing": "given"}, gpc=True)
    )
    assert {c["purpose"]: c["status"] for c in body_flag.json()["consents"]} == {
        "targeting": "withdrawn",
        "joint-marketing": "withdrawn",
    }
    withdrawals = [t for t in await outbox_types(db) if t[0].endswith("withdrawn.v1")]
    assert sorted(p for _, p, _ in withdrawals) == ["joint-marketing", "targeting"]
    assert all(method == 5 for *_, method in withdrawals)  # CONSENT_METHOD_GPC
    check = await client.get("/v1/subjects/user-3/checks/targeting")
    assert check.json() == {"allowed": False, "reason": "withdrawn"}


async def test_under_13_is_refused_and_flagged(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    response = await client.post(
        "/v1/subjects/kid-1/consents", json=capture({"performance": "given"}, age=12)
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == "urn:consentry:problem:child-consent-not-allowed"
    assert problem["minimum_age"] == 13
    assert await counts(db) == (0, 0, 0)
    # The subject is flagged: even without an age signal, consent is refused from now on.
    again = await client.put(
        "/v1/subjects/kid-1/consents/targeting", json={"status": "given", "policy_version": POLICY}
    )
    assert again.json()["type"] == "urn:consentry:problem:child-consent-not-allowed"
    # Withdrawals and purposes on another legal basis are accepted.
    withdrawal = await client.put(
        "/v1/subjects/kid-1/consents/targeting",
        json={"status": "withdrawn", "policy_version": POLICY},
    )
    assert withdrawal.status_code == 200
    assert (await client.get("/v1/subjects/kid-1/checks/performance")).json() == {
        "allowed": False,
        "reason": "child",
    }
    assert (await client.get("/v1/subjects/kid-1/checks/required")).json()["allowed"] is True
    proof = (await client.get("/v1/subjects/kid-1/proof")).json()
    assert proof["is_child"] is True
    teen = await client.post(
        "/v1/subjects/teen-1/consents", json=capture({"performance": "given"}, age=13)
    )
    assert teen.status_code == 200


async def test_proof_has_the_whole_history_and_no_raw_client_data(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str
) -> None:
    client_info = {"ip_address": "203.0.113.77", "user_agent": "UnitTestBrowser/1.0"}
    path = "/v1/subjects/person@example.com/consents"
    await client.post(path, json=capture({"performance": "given"}, client=client_info))
    await client.post(
        path, json=capture({"performance": "withdrawn"}, method="preference-page", source="prefs")
    )
    proof = await client.get("/v1/subjects/person@example.com/proof")
    assert proof.status_code == 200
    body = proof.json()
    assert [(h["status"], h["method"], h["subject_version"]) for h in body["history"]] == [
        ("given", "banner", 1),
        ("withdrawn", "preference-page", 2),
    ]
    first = body["history"][0]
    assert first["policy_version"] == POLICY
    assert first["policy_url"] == published_policy
    assert len(first["client_fingerprint"]) == 64
    assert body["history"][1]["client_fingerprint"] is None
    dump = repr([dict(r) for r in await db.fetch("SELECT * FROM consent_ledger")])
    assert "203.0.113.77" not in dump
    assert "UnitTestBrowser" not in dump
    assert "person@example.com" not in dump
    missing = await client.get("/v1/subjects/nobody/proof")
    assert missing.status_code == 404


async def test_concurrent_captures_share_transactions(
    client: httpx.AsyncClient, db: asyncpg.Connection, published_policy: str, app_state: object
) -> None:
    writer = app_state.capture_writer  # type: ignore[attr-defined]
    before = writer.transactions
    responses = await asyncio.gather(
        *(client.post(f"/v1/subjects/load-{n}/consents", json=capture(BANNER)) for n in range(200))
    )
    assert [r.status_code for r in responses] == [200] * 200
    assert writer.transactions - before < 200  # grouped: fewer transactions than captures
    assert await counts(db) == (800, 800, 800)
    versions = await db.fetch("SELECT DISTINCT version FROM subjects")
    assert [r["version"] for r in versions] == [4]
