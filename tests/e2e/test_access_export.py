"""End to end through real processes and the real broker: the subprocessors service learns
the dev tenant and its key from the consent service's directory, tells a recipient (a local
receiver on loopback that acknowledges with a signed answer) about a consent withdrawal, and
an access request filed with the consent service yields an export that holds every
service's part, the subprocessors service's included: to whom the data were disclosed."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from consentry.devstack.services import DEV_API_KEY
from consentry.devstack.stack import DevStack
from consentry.devstack.testing_workers import Worker

from .conftest import EXTRA_PURPOSES, POLICY_VERSION, wait_until_completed

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
PURPOSE = EXTRA_PURPOSES[3]  # a purpose only this test's recipient receives data for


@pytest_asyncio.fixture(loop_scope="session")
async def subprocessors_api(stack: DevStack, relay: Worker) -> AsyncIterator[httpx.AsyncClient]:
    """The subprocessors API with the dev key, once the directory has brought the dev tenant
    (needs the consent relay)."""
    async with httpx.AsyncClient(
        base_url=stack.api_url("subprocessors"),
        headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        timeout=30,
    ) as client:
        async with asyncio.timeout(60):
            while (response := await client.get("/v1/recipients")).status_code == 503:
                await asyncio.sleep(0.2)  # the tenant is not announced here yet
        assert response.status_code == 200, response.text
        yield client


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    """A recipient's webhook endpoint on 127.0.0.1."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield server
    finally:
        server.clear()
        server.stop()


def _acknowledge_with(secret: str) -> Any:
    """Answer each verified notice with a signed `{"acknowledged": true}`."""

    def handle(request: Request) -> Response:
        headers = {key.lower(): value for key, value in request.headers.items()}
        Webhook(secret).verify(request.get_data(), headers)  # raises: answered 500
        body = json.dumps({"acknowledged": True})
        now = datetime.now(UTC)
        return Response(
            body,
            status=200,
            content_type="application/json",
            headers={
                "webhook-id": headers["webhook-id"],
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(secret).sign(headers["webhook-id"], now, body),
            },
        )

    return handle


async def _consent(api: httpx.AsyncClient, subject: str, status: str) -> None:
    response = await api.put(
        f"/v1/subjects/{subject}/consents/{PURPOSE}",
        json={"status": status, "policy_version": POLICY_VERSION},
    )
    assert response.status_code == 200, response.text


async def _acknowledged(api: httpx.AsyncClient, recipient_id: str) -> list[dict[str, Any]]:
    response = await api.get(
        "/v1/deliveries", params={"recipient_id": recipient_id, "status": "acknowledged"}
    )
    assert response.status_code == 200, response.text
    deliveries: list[dict[str, Any]] = response.json()["deliveries"]
    return deliveries


@pytest.mark.timeout(240)
async def test_an_access_export_names_the_recipients_told_about_the_subject(
    consent_api: httpx.AsyncClient,
    subprocessors_api: httpx.AsyncClient,
    receiver: HTTPServer,
) -> None:
    name = f"Partner {secrets.token_hex(3)}"
    registered = await subprocessors_api.post(
        "/v1/recipients",
        json={
            "name": name,
            "role": "joint-marketing",
            "region": "US",
            "webhook_url": receiver.url_for("/hook"),
            "purposes": [PURPOSE],
            "data_categories": ["contact details"],
        },
    )
    assert registered.status_code == 201, registered.text
    recipient = registered.json()
    receiver.expect_request("/hook", method="POST").respond_with_handler(
        _acknowledge_with(recipient["signing_secret"])
    )
    try:
        subject = f"access-{secrets.token_hex(4)}@example.com"
        await _consent(consent_api, subject, "given")
        await _consent(consent_api, subject, "withdrawn")  # the recipient must be told
        async with asyncio.timeout(60):
            while not (told := await _acknowledged(subprocessors_api, recipient["id"])):
                await asyncio.sleep(0.2)
        (delivery,) = told

        filed = await consent_api.post(
            "/v1/rights-requests",
            json={"kind": "access", "requester": "tenant", "subject_ids": [subject]},
        )
        assert filed.status_code == 202, filed.text
        request_id = filed.json()["id"]
        state = await wait_until_completed(consent_api, request_id)
        progress = state["progress"]
        assert progress["expected_services"] == ["consent", "preferences", "subprocessors"]
        assert {s["service"] for s in progress["services"]} == set(progress["expected_services"])

        link = await consent_api.get(f"/v1/rights-requests/{request_id}/export")
        assert link.status_code == 200, link.text
        async with httpx.AsyncClient(base_url=str(consent_api.base_url), timeout=30) as anyone:
            download = await anyone.get(link.json()["url"])  # the link alone, no API key
        assert download.status_code == 200, download.text
        (exported,) = download.json()["subjects"]
        assert exported["subject_ref"] == delivery["subject_ref"]
        services = exported["services"]
        assert set(services) == {"consent", "preferences", "subprocessors"}
        part = services["subprocessors"]
        (notice,) = part["notices"]
        assert (notice["kind"], notice["purposes"]) == ("consent-withdrawn", [PURPOSE])
        (told_recipient,) = notice["recipients"]
        assert told_recipient["status"] == "acknowledged"
        assert told_recipient["acknowledged_at"] is not None
        assert told_recipient["recipient"] == {
            "id": recipient["id"],
            "name": name,
            "role": "joint-marketing",
            "region": "US",
            "outside_eea": True,
            "purposes": [PURPOSE],
            "data_categories": ["contact details"],
        }
        assert name in [r["name"] for r in part["recipients"]]
        assert "whsec_" not in download.text
        assert receiver.url_for("/hook") not in download.text
    finally:
        # Later tests' erasures of the dev tenant must not wait for this recipient.
        retired = await subprocessors_api.delete(f"/v1/recipients/{recipient['id']}")
        assert retired.status_code in (200, 204), retired.text
