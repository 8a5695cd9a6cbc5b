"""Rights requests over HTTP against a real PostgreSQL, as the application's role (RLS):
filing, the subject's lifecycle with its paused clock, extension, rejection, validation,
tenant isolation, and the listing by deadline."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from consentry.consent.rights.deadlines import Deadline
from consentry.consent.tenants.service import pseudonymise
from consentry.eventing import catalogue
from consentry.eventing.testing import outbox_events
from consentry.rights.v1 import rights_pb2

from .conftest import TENANT_ID, ClientFor, MakeTenant
from .test_rights_support import backdate, file, messages

pytestmark = pytest.mark.integration
BASE = "/v1/rights-requests"


def problem_type(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    kind: str = response.json()["type"]
    return kind.removeprefix("urn:consentry:problem:")


async def test_a_subjects_erasure_waits_for_identity_with_the_clock_paused(
    client: httpx.AsyncClient, db: asyncpg.Connection, subject_key: bytes
) -> None:
    filed = await file(
        client, kind="erasure", requester="subject", subject_id="Ada@Example.com", note="by phone"
    )
    assert filed["state"] == "received"
    assert filed["subject_count"] == 1
    assert filed["subject_ref"] == pseudonymise(subject_key, "ada@example.com")
    assert filed["deadline"]["status"] == "paused"
    assert filed["deadline"]["pauses"][0]["resumed_at"] is None
    assert filed["note"] == "by phone"
    # Nothing personal in clear: the identifier only as its reference, the note sealed.
    row = await db.fetchrow("SELECT * FROM rights_requests WHERE id = $1", uuid.UUID(filed["id"]))
    assert row is not None
    assert b"by phone" not in row["note_sealed"]
    assert "Ada" not in str(dict(row))
    assert "example" not in str(dict(row)).lower()
    subjects = await db.fetch("SELECT subject_ref FROM rights_request_subjects")
    assert [r["subject_ref"] for r in subjects] == [filed["subject_ref"]]

    verified = await client.post(f"{BASE}/{filed['id']}/identity", json={"verified": True})
    assert verified.status_code == 200, verified.text
    body = verified.json()
    assert body["state"] == "in-progress"
    assert body["verified_at"] is not None
    assert body["started_at"] is not None
    (pause,) = body["deadline"]["pauses"]
    assert pause["resumed_at"] is not None
    # Paused and resumed on the same day: the deadline is one month (rolled) after receipt.
    received = datetime.fromisoformat(body["received_at"])
    expected = Deadline.start(received, "Europe/Stockholm", "SE").due_at
    assert datetime.fromisoformat(body["deadline"]["due_at"]) == expected
    assert body["deadline"]["status"] in ("on_track", "due_soon")
    stored = await db.fetchval(
        "SELECT due_at FROM rights_requests WHERE id = $1", uuid.UUID(body["id"])
    )
    assert stored == expected

    again = await client.post(f"{BASE}/{filed['id']}/identity", json={"verified": True})
    assert again.status_code == 409
    assert problem_type(again) == "rights-request-state-conflict"


async def test_a_request_whose_identity_is_not_verified_is_rejected_with_its_reason(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    filed = await file(client, kind="access", requester="subject", subject_id="user-9")
    missing = await client.post(f"{BASE}/{filed['id']}/identity", json={"verified": False})
    assert missing.status_code == 422
    assert problem_type(missing) == "validation-error"

    refused = await client.post(
        f"{BASE}/{filed['id']}/identity",
        json={"verified": False, "reason": "the identity could not be confirmed"},
    )
    assert refused.status_code == 200, refused.text
    body = refused.json()
    assert body["state"] == "rejected"
    assert body["reason"] == "the identity could not be confirmed"
    assert body["closed_at"] is not None
    assert body["deadline"]["status"] == "closed"
    assert body["certificate"] is None

    (closed,) = await outbox_events(db, catalogue.REQUEST_CLOSED)
    assert closed.subject_ref == "requests"
    (message,) = messages([closed], rights_pb2.RequestClosed)
    assert message.request_id == filed["id"]
    assert message.outcome == rights_pb2.REQUEST_OUTCOME_REJECTED
    assert message.reason == "the identity could not be confirmed"
    assert message.kind == rights_pb2.REQUEST_KIND_ACCESS

    for path, payload in (
        ("identity", {"verified": True}),
        ("reject", {"reason": "again"}),
        ("extend", {"months": 1, "reason": "x", "notice_sent_at": datetime.now(UTC).isoformat()}),
    ):
        late = await client.post(f"{BASE}/{filed['id']}/{path}", json=payload)
        assert late.status_code == 409, (path, late.text)
        assert problem_type(late) == "rights-request-closed"


async def test_extension_once_with_reason_and_notice_before_the_first_month_ends(
    client: httpx.AsyncClient,
) -> None:
    filed = await file(client, kind="erasure", requester="subject", subject_id="user-1")
    now = datetime.now(UTC)
    paused = await client.post(
        f"{BASE}/{filed['id']}/extend",
        json={"months": 1, "reason": "many systems", "notice_sent_at": now.isoformat()},
    )
    assert paused.status_code == 422
    assert problem_type(paused) == "extension-while-paused"

    await client.post(f"{BASE}/{filed['id']}/identity", json={"verified": True})
    for body, slug in (
        ({"months": 3, "reason": "x", "notice_sent_at": now.isoformat()}, "validation-error"),
        ({"months": 1, "reason": "   ", "notice_sent_at": now.isoformat()}, "validation-error"),
        (
            {"months": 1, "reason": "x", "notice_sent_at": (now + timedelta(hours=1)).isoformat()},
            "occurred-in-future",
        ),
        (
            {"months": 1, "reason": "x", "notice_sent_at": (now - timedelta(days=3)).isoformat()},
            "rights-request-dates-out-of-order",  # the notice before receipt
        ),
        ({"months": 1, "reason": "x", "notice_sent_at": "2026-01-01T10:00:00"}, "validation-error"),
    ):
        refused = await client.post(f"{BASE}/{filed['id']}/extend", json=body)
        assert refused.status_code == 422, refused.text
        assert problem_type(refused) == slug, body

    before = (await client.get(f"{BASE}/{filed['id']}")).json()["deadline"]
    extended = await client.post(
        f"{BASE}/{filed['id']}/extend",
        json={"months": 2, "reason": "many systems", "notice_sent_at": now.isoformat()},
    )
    assert extended.status_code == 200, extended.text
    deadline = extended.json()["deadline"]
    assert deadline["extension"]["months"] == 2
    assert deadline["extension"]["reason"] == "many systems"
    assert datetime.fromisoformat(deadline["due_at"]) > datetime.fromisoformat(before["due_at"])
    assert deadline["original_due_at"] == before["original_due_at"]

    second = await client.post(
        f"{BASE}/{filed['id']}/extend",
        json={"months": 1, "reason": "more", "notice_sent_at": now.isoformat()},
    )
    assert second.status_code == 422
    assert problem_type(second) == "extension-already-used"


async def test_an_extension_after_the_first_month_is_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    filed = await file(client, kind="correction", requester="tenant", subject_id="user-2")
    # The request was received six weeks ago (its facts moved back, due_at recomputed).
    received = datetime.now(UTC) - timedelta(weeks=6)
    deadline = Deadline.start(received, "Europe/Stockholm", "SE")
    await db.execute(
        "UPDATE rights_requests SET received_at = $2, verified_at = $2, started_at = $2, "
        "due_at = $3 WHERE id = $1",
        uuid.UUID(filed["id"]),
        received,
        deadline.due_at,
    )
    refused = await client.post(
        f"{BASE}/{filed['id']}/extend",
        json={"months": 1, "reason": "late", "notice_sent_at": datetime.now(UTC).isoformat()},
    )
    assert refused.status_code == 422
    body = refused.json()
    assert body["type"] == "urn:consentry:problem:extension-too-late"
    assert datetime.fromisoformat(body["original_due_at"]) == deadline.original_due_at


async def test_a_tenants_request_is_in_progress_at_once_and_rejection_needs_a_reason(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    filed = await file(
        client, kind="correction", requester="tenant", subject_ids=["u1", "u2", "u1", " u2 "]
    )
    assert filed["state"] == "in-progress"
    assert filed["verified_at"] == filed["received_at"] == filed["started_at"]
    assert filed["subject_count"] == 2  # repeats (after normalisation) count once
    assert filed["subject_ref"] is None
    assert filed["deadline"]["pauses"] == []

    blank = await client.post(f"{BASE}/{filed['id']}/reject", json={"reason": " "})
    assert blank.status_code == 422
    rejected = await client.post(f"{BASE}/{filed['id']}/reject", json={"reason": "unfounded"})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["state"] == "rejected"
    (message,) = messages(
        await outbox_events(db, catalogue.REQUEST_CLOSED), rights_pb2.RequestClosed
    )
    assert message.reason == "unfounded"


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "erasure", "requester": "subject"},  # no subject
        {"kind": "erasure", "requester": "subject", "subject_ids": ["a", "b"]},
        {"kind": "erasure", "requester": "tenant", "subject_id": "a", "subject_ids": ["b"]},
        {"kind": "erasure", "requester": "tenant", "subject_ids": []},
        {"kind": "erasure", "requester": "tenant", "subject_ids": ["ok", "  "]},
        {"kind": "forget-me", "requester": "subject", "subject_id": "a"},
        {"kind": "erasure", "requester": "auditor", "subject_id": "a"},
        # Mass assignment: a client cannot set what the service decides.
        {"kind": "erasure", "requester": "subject", "subject_id": "a", "state": "completed"},
        {"kind": "erasure", "requester": "tenant", "subject_id": "a", "due_at": "2099-01-01"},
    ],
)
async def test_bad_requests_are_refused_and_write_nothing(
    client: httpx.AsyncClient, db: asyncpg.Connection, body: dict[str, Any]
) -> None:
    response = await client.post(BASE, json=body)
    assert response.status_code == 422, response.text
    assert problem_type(response) == "validation-error"
    assert "ok" not in response.text  # the input is never echoed
    assert await db.fetchval("SELECT count(*) FROM rights_requests") == 0


async def test_requests_need_the_rights_scopes(
    make_tenant: MakeTenant, client_for: ClientFor, client: httpx.AsyncClient
) -> None:
    filed = await file(client, kind="erasure", requester="subject", subject_id="a")
    reader = client_for((await make_tenant("Reader", scopes=["rights:read"])).key)
    consent_only = client_for((await make_tenant("Consent", scopes=["consent:write"])).key)
    denied = await reader.post(
        BASE, json={"kind": "erasure", "requester": "subject", "subject_id": "a"}
    )
    assert denied.status_code == 403
    assert denied.json()["scope"] == "rights:write"
    assert (await consent_only.get(BASE)).status_code == 403
    # A reader of another tenant does not see this tenant's request: 404, as for no request.
    other = await reader.get(f"{BASE}/{filed['id']}")
    assert other.status_code == 404
    assert problem_type(other) == "rights-request-not-found"
    assert (await reader.get(BASE)).json()["requests"] == []
    unknown = await client.get(f"{BASE}/{uuid.uuid4()}")
    assert unknown.status_code == 404


async def test_another_tenants_request_cannot_be_changed(
    make_tenant: MakeTenant, client_for: ClientFor, client: httpx.AsyncClient
) -> None:
    filed = await file(client, kind="erasure", requester="subject", subject_id="a")
    intruder = client_for((await make_tenant("Intruder")).key)
    for path, payload in (
        ("identity", {"verified": True}),
        ("reject", {"reason": "mine now"}),
        ("complete", None),
    ):
        response = await intruder.post(f"{BASE}/{filed['id']}/{path}", json=payload)
        assert response.status_code == 404, (path, response.text)
    mine = (await client.get(f"{BASE}/{filed['id']}")).json()
    assert mine["state"] == "received"


async def test_listing_by_deadline_and_state(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    overdue = await file(client, kind="erasure", requester="tenant", subject_id="late")
    soon = await file(client, kind="correction", requester="tenant", subject_id="soon")
    fresh = await file(client, kind="access", requester="tenant", subject_id="fresh")
    paused = await file(client, kind="erasure", requester="subject", subject_id="paused")
    # Move the facts back in time: overdue received 40 days ago; "soon" received so that
    # its due day is at most 5 days away (whatever weekends and holidays do to it).
    await backdate(db, overdue["id"], now - timedelta(days=40))
    for days in range(26, 31):
        received = now - timedelta(days=days)
        if Deadline.start(received, "Europe/Stockholm", "SE").status(now) == "due_soon":
            await backdate(db, soon["id"], received)
            break
    else:
        pytest.fail("no receipt date gives a due-soon request")
    await backdate(db, paused["id"], now - timedelta(days=40), paused=True)

    async def listed(query: str) -> list[str]:
        response = await client.get(f"{BASE}?{query}")
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["requests"]]

    assert await listed("deadline=overdue") == [overdue["id"]]
    assert await listed("deadline=due-soon") == [soon["id"]]
    everything = await listed("deadline=all")
    assert set(everything) == {overdue["id"], soon["id"], fresh["id"], paused["id"]}
    assert await listed("state=received") == [paused["id"]]
    items = (await client.get(f"{BASE}?deadline=overdue")).json()["requests"]
    assert items[0]["deadline_status"] == "overdue"
    assert items[0]["days_left"] < 0

    # Pages follow the due instant, and the cursor continues after the last one.
    first = (await client.get(f"{BASE}?limit=2")).json()
    second = (await client.get(f"{BASE}?limit=2&cursor={first['next_cursor']}")).json()
    assert [i["id"] for i in first["requests"] + second["requests"]] == everything
    assert second["next_cursor"] is None
    bad = await client.get(f"{BASE}?cursor=not-a-cursor")
    assert bad.status_code == 422
    assert problem_type(bad) == "validation-error"


async def test_the_tenant_id_of_the_dev_key_is_the_requests_tenant(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    filed = await file(client, kind="erasure", requester="subject", subject_id="a")
    tenant = await db.fetchval(
        "SELECT tenant_id FROM rights_requests WHERE id = $1", uuid.UUID(filed["id"])
    )
    assert tenant == TENANT_ID


async def test_the_bulk_path_takes_up_to_100k_subjects_within_8_mib(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    too_big = [f"{n:0100d}" for n in range(90_000)]  # ~9.4 MB of JSON
    response = await client.post(
        BASE, json={"kind": "erasure", "requester": "tenant", "subject_ids": too_big}
    )
    assert response.status_code == 413
    assert problem_type(response) == "payload-too-large"
    too_many = [f"u{n}" for n in range(100_001)]
    response = await client.post(
        BASE, json={"kind": "erasure", "requester": "tenant", "subject_ids": too_many}
    )
    assert response.status_code == 422
    assert problem_type(response) == "validation-error"
    # Only that path: the others keep the service's limit (4 KiB in these tests).
    other = await client.post(f"{BASE}/{uuid.uuid4()}/reject", json={"reason": "x" * 5000})
    assert other.status_code == 413
    assert await db.fetchval("SELECT count(*) FROM rights_requests") == 0


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "erasure", "requester": "subject", "subject_id": "a@example.com", "note": "n"},
        {"kind": "child-data-erasure", "requester": "tenant", "subject_id": "kid"},
        {"kind": "access", "requester": "tenant", "subject_ids": ["b", "c"]},
        {"kind": "correction", "requester": "tenant", "subject_ids": ["d"], "note": ""},
    ],
)
async def test_the_answer_to_a_filing_is_the_request_as_read_back(
    client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    # The 202 is built from the row as inserted, without reading the request back.
    filed = await file(client, **body)
    read = await client.get(f"{BASE}/{filed['id']}")
    assert read.status_code == 200, read.text
    as_read = read.json()
    # Only the clock-dependent fields may differ between the two answers.
    for answer in (filed, as_read):
        answer["deadline"].pop("days_left")
    assert filed == as_read
