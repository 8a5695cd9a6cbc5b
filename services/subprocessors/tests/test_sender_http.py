"""The sender's HTTP side against real loopback servers: what each kind of answer (or none)
means, that redirects are not followed, that a large answer is read only up to the limit,
and that what arrives is a Standard Webhooks request the recipient can verify."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
import pytest_asyncio
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from consentry.eventing.db import Pool
from consentry.subprocessors.deliveries.models import Claimed
from consentry.subprocessors.notifier.sender import (
    ACKNOWLEDGED,
    DELIVERED,
    USER_AGENT,
    Outcome,
    Sender,
)
from consentry.subprocessors.recipients.service import secret_context
from consentry.subprocessors.settings import SenderSettings

from .conftest import signed_ack

SECRET = secrets.token_bytes(24)
WHSEC = "whsec_" + base64.b64encode(SECRET).decode()
TIMEOUT_S = 0.5


@pytest.fixture
def settings() -> SenderSettings:
    # The sender's HTTP side never touches the database: the URL is never dialled.
    return SenderSettings(
        database_url="postgresql://127.0.0.1:1/unused",
        environment="test",
        public_url="http://subprocessors.test",
        webhook_timeout_seconds=TIMEOUT_S,
        max_response_bytes=1024,
    )


@pytest_asyncio.fixture
async def sender(settings: SenderSettings) -> AsyncIterator[Sender]:
    # `post` never uses the pool (claims and outcomes do): none is opened.
    made = Sender(cast(Pool, None), settings)
    try:
        yield made
    finally:
        await made.close()


def claimed(settings: SenderSettings, url: str) -> Claimed:
    tenant_id, recipient_id = uuid.uuid4(), uuid.uuid4()
    return Claimed(
        tenant_id=tenant_id,
        id=uuid.uuid4(),
        recipient_id=recipient_id,
        payload=json.dumps({"type": "erasure", "subject_ref": "ref-1"}),
        attempts=0,
        deadline_at=datetime.now(UTC) + timedelta(hours=1),
        expired=False,
        webhook_url=url,
        secret_sealed=settings.sealer().seal(
            SECRET, context=secret_context(tenant_id, recipient_id)
        ),
        previous_secret_sealed=None,
        previous_secret_expires_at=None,
    )


def signed_answer(message_id: str, padding: int = 0) -> Response:
    """The recipient's signed acknowledgement of `message_id`."""
    return signed_ack(WHSEC, padding=padding)(1, message_id, b"")


async def test_a_signed_acknowledgement_acknowledges_and_the_request_verifies(
    httpserver: HTTPServer, settings: SenderSettings, sender: Sender
) -> None:
    seen: list[Request] = []

    def handle(request: Request) -> Response:
        seen.append(request)
        return signed_answer(request.headers["webhook-id"])

    httpserver.expect_request("/hook", method="POST").respond_with_handler(handle)
    delivery = claimed(settings, httpserver.url_for("/hook"))

    assert await sender.post(delivery) == ACKNOWLEDGED

    (request,) = seen
    headers = {name.lower(): value for name, value in request.headers.items()}
    Webhook(WHSEC).verify(request.get_data(), headers)  # raises when it does not verify
    assert request.get_data() == delivery.payload.encode()
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == USER_AGENT
    assert headers["webhook-id"] == f"msg_{delivery.id.hex}"


async def test_a_plain_2xx_is_delivered_and_a_forged_ack_is_not_an_acknowledgement(
    httpserver: HTTPServer, settings: SenderSettings, sender: Sender
) -> None:
    httpserver.expect_request("/plain").respond_with_data("", status=204)
    httpserver.expect_request("/forged").respond_with_json(
        {"acknowledged": True}, headers={"webhook-id": "msg_x", "webhook-signature": "v1,AAAA"}
    )

    assert await sender.post(claimed(settings, httpserver.url_for("/plain"))) == DELIVERED
    assert await sender.post(claimed(settings, httpserver.url_for("/forged"))) == DELIVERED


async def test_an_error_status_fails_with_its_code(
    httpserver: HTTPServer, settings: SenderSettings, sender: Sender
) -> None:
    httpserver.expect_request("/down").respond_with_data("busy", status=503)

    outcome = await sender.post(claimed(settings, httpserver.url_for("/down")))

    assert outcome == Outcome("failed", "http-503")


async def test_a_redirect_is_not_followed(
    httpserver: HTTPServer, settings: SenderSettings, sender: Sender
) -> None:
    httpserver.expect_request("/moved").respond_with_data(
        "", status=307, headers={"location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("", status=204)

    outcome = await sender.post(claimed(settings, httpserver.url_for("/moved")))

    assert outcome == Outcome("failed", "http-307")
    assert [request.path for request, _ in httpserver.log] == ["/moved"]


async def test_nobody_listening_is_a_connect_error(
    settings: SenderSettings, sender: Sender
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed: nothing listens there

    outcome = await sender.post(claimed(settings, f"http://127.0.0.1:{port}/hook"))

    assert outcome == Outcome("failed", "connect-error")


async def test_a_recipient_that_does_not_answer_in_time_is_a_timeout(
    httpserver: HTTPServer, settings: SenderSettings, sender: Sender
) -> None:
    release = threading.Event()

    def stall(_request: Request) -> Response:
        release.wait(TIMEOUT_S * 6)
        return Response(status=204)

    httpserver.expect_request("/slow").respond_with_handler(stall)
    try:
        outcome = await sender.post(claimed(settings, httpserver.url_for("/slow")))
    finally:
        release.set()

    assert outcome == Outcome("failed", "timeout")


async def test_a_large_answer_is_read_only_up_to_the_limit(
    httpserver: HTTPServer, settings: SenderSettings, sender: Sender
) -> None:
    """A signed acknowledgement padded beyond `max_response_bytes` acknowledges only if the
    whole answer was read: cut at the limit, its signature no longer verifies (delivered).
    The same answer within the limit acknowledges."""
    limit = settings.max_response_bytes

    def answer(padding: int) -> Callable[[Request], Response]:
        return lambda request: signed_answer(request.headers["webhook-id"], padding)

    httpserver.expect_request("/big").respond_with_handler(answer(limit * 64))
    httpserver.expect_request("/small").respond_with_handler(answer(limit // 2))

    assert await sender.post(claimed(settings, httpserver.url_for("/big"))) == DELIVERED
    assert await sender.post(claimed(settings, httpserver.url_for("/small"))) == ACKNOWLEDGED


async def test_a_configured_proxy_carries_every_webhook(
    httpserver: HTTPServer, settings: SenderSettings
) -> None:
    """With `webhook_proxy_url` the post goes to the proxy, naming the recipient's URL; a
    host only the proxy can reach is reached. Without it, that host is a connect error."""
    seen: list[Request] = []

    def proxy(request: Request) -> Response:
        seen.append(request)
        return Response(status=204)

    httpserver.expect_request("/hook", method="POST").respond_with_handler(proxy)
    proxied = Sender(
        cast(Pool, None),
        settings.model_copy(update={"webhook_proxy_url": httpserver.url_for("/")}),
    )
    direct = Sender(cast(Pool, None), settings)
    url = "http://recipient.invalid/hook"  # .invalid never resolves (RFC 6761)
    try:
        assert await proxied.post(claimed(settings, url)) == DELIVERED
        assert await direct.post(claimed(settings, url)) == Outcome("failed", "connect-error")
    finally:
        await proxied.close()
        await direct.close()

    (request,) = seen
    assert request.headers["host"] == "recipient.invalid"
