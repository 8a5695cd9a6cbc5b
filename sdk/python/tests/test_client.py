"""The HTTP clients against the running consent and preferences APIs."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from consentry.devstack.services import DEV_API_KEY
from consentry.sdk import (
    NO_RETRY,
    AsyncConsentry,
    Consentry,
    ConsentryError,
    MarketingConsentRequired,
    NotFound,
    RateLimited,
    Retry,
    SubjectNotFound,
    Unauthenticated,
    ValidationFailed,
    error_class,
)
from consentry.sdk.models import CheckResult, RecordedConsent

from .conftest import POLICY_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


@pytest.fixture
async def client(consent_url: str, preferences_url: str) -> AsyncConsentry:
    return AsyncConsentry(DEV_API_KEY, consent_url=consent_url, preferences_url=preferences_url)


async def test_give_check_withdraw(client: AsyncConsentry, subject_id: str) -> None:
    async with client:
        given: RecordedConsent = await client.give(
            subject_id, "performance", policy_version=POLICY_VERSION, source="sdk-test"
        )
        assert (given.purpose, given.status) == ("performance", "given")
        assert given.receipt.count(".") == 2  # a compact JWS
        assert await client.check(subject_id, "performance") == CheckResult(
            allowed=True, reason="given"
        )
        withdrawn = await client.withdraw(subject_id, "performance", policy_version=POLICY_VERSION)
        assert withdrawn.status == "withdrawn"
        assert withdrawn.subject_version > given.subject_version
        assert await client.check(subject_id, "performance") == CheckResult(
            allowed=False, reason="withdrawn"
        )
        current = await client.consents(subject_id)
        assert current.status("performance") == "withdrawn"
        history = await client.proof(subject_id)
        assert [(e.purpose, e.status) for e in history.history] == [
            ("performance", "given"),
            ("performance", "withdrawn"),
        ]
        assert history.subject_ref == current.subject_ref
        # The same subject by id and by its reference; results in order.
        results = await client.check_many([(subject_id, "performance"), ("nobody", "targeting")])
        assert [(r.allowed, r.reason) for r in results] == [
            (False, "withdrawn"),
            (False, "no-consent"),
        ]
        assert await client.subject_refs([subject_id]) == [current.subject_ref]


def test_sync_client_shares_the_operations(consent_url: str, subject_id: str) -> None:
    with Consentry(DEV_API_KEY, consent_url=consent_url) as client:
        given = client.give(subject_id, "functionality", policy_version=POLICY_VERSION)
        assert given.status == "given"
        captured = client.capture(
            subject_id,
            {"performance": "given", "targeting": "given"},
            policy_version=POLICY_VERSION,
            method="banner",
            source="web-banner",
            gpc=True,  # withdraws targeting whatever was asked
        )
        assert captured.gpc_applied is True
        states = {c.purpose: c.status for c in captured.consents}
        assert states == {
            "performance": "given",
            "targeting": "withdrawn",
            "joint-marketing": "withdrawn",  # GPC withdraws it too, though not asked about
        }
        assert client.check(subject_id, "functionality").allowed is True
        with pytest.raises(SubjectNotFound):
            client.consents(subject_id + ".unknown")


async def test_problems_are_typed_exceptions(client: AsyncConsentry, subject_id: str) -> None:
    async with client:
        with pytest.raises(NotFound) as missing:
            await client.consents(subject_id)
        assert isinstance(missing.value, SubjectNotFound)
        assert (missing.value.status, missing.value.slug) == (404, "subject-not-found")
        assert missing.value.type == "urn:consentry:problem:subject-not-found"

        with pytest.raises(ValidationFailed) as refused:
            await client.give(subject_id, "performance", policy_version="no-such-version")
        assert refused.value.status == 422
        assert refused.value.slug != ""
        assert error_class(refused.value.slug, 422) is type(refused.value)

        with pytest.raises(ValidationFailed) as invalid:
            await client.give(subject_id, "performance", policy_version="not a version!")
        assert invalid.value.slug == "validation-error"
        assert invalid.value.extensions["errors"]  # what was wrong, without the input

        with pytest.raises(NotFound) as no_request:
            await client.rights_request("00000000-0000-4000-8000-00000000abcd")
        assert no_request.value.slug == "rights-request-not-found"

    async with AsyncConsentry("not-a-key", consent_url=client._urls["consent"]) as stranger:
        with pytest.raises(Unauthenticated) as unknown:
            await stranger.check(subject_id, "performance")
        assert unknown.value.status == 401


async def test_rate_limited_calls_are_retried_after_retry_after(
    limited_consent_url: str, subject_id: str
) -> None:
    async with (
        AsyncConsentry(DEV_API_KEY, consent_url=limited_consent_url) as patient,
        AsyncConsentry(DEV_API_KEY, consent_url=limited_consent_url, retry=NO_RETRY) as hasty,
    ):
        # One token a second: the second and third calls each wait for the next token.
        started = time.monotonic()
        results = [await patient.check(subject_id, "performance") for _ in range(3)]
        assert {r.reason for r in results} == {"no-consent"}
        assert time.monotonic() - started >= 1.0  # Retry-After was honoured, not hammered

        await asyncio.sleep(1.1)  # a fresh token; spend it, then be refused
        await hasty.check(subject_id, "performance")
        with pytest.raises(RateLimited) as limited:
            await hasty.check(subject_id, "performance")
        assert limited.value.slug == "rate-limited"
        assert limited.value.retry_after is not None
        assert limited.value.retry_after >= 1


async def test_connection_errors_retried_only_for_idempotent_calls(subject_id: str) -> None:
    class Flaky(httpx.AsyncBaseTransport):
        """Fails the first request of each call, then answers 200 with a check result."""

        def __init__(self) -> None:
            self.requests: list[str] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            self.requests.append(request.method)
            if len(self.requests) % 2 == 1:
                raise httpx.ReadError("connection reset", request=request)
            return httpx.Response(200, json={"allowed": True, "reason": "given"})

    flaky = Flaky()
    retry = Retry(base=0.01)
    async with AsyncConsentry("key", transport=flaky, retry=retry) as client:
        assert (await client.check(subject_id, "performance")).allowed is True
        assert flaky.requests == ["GET", "GET"]
        # Filing a rights request twice would file two: not retried after a reset.
        with pytest.raises(httpx.ReadError):
            await client.file_rights_request("erasure", subject_id=subject_id)
        assert flaky.requests == ["GET", "GET", "POST"]


async def test_rights_request_filed_and_followed(client: AsyncConsentry, subject_id: str) -> None:
    async with client:
        await client.give(subject_id, "performance", policy_version=POLICY_VERSION)
        filed = await client.file_rights_request(
            "erasure", subject_ids=[subject_id], note="sdk test"
        )
        assert (filed.requester, filed.subject_count) == ("tenant", 1)
        done = await client.follow_rights_request(filed.id, seconds=45, interval=0.3)
        assert done.state == "completed"
        assert done.certificate is not None
        assert (await client.rights_request(filed.id)).state == "completed"
        # A subject's own request waits for identity verification: following it times out.
        waiting = await client.file_rights_request("access", subject_id=subject_id + ".2")
        assert waiting.state == "received"
        with pytest.raises(TimeoutError):
            await client.follow_rights_request(waiting.id, seconds=1, interval=0.2)


async def test_preferences(client: AsyncConsentry, subject_id: str) -> None:
    async with client:
        # The tenant reaches the preferences service through the tenant topic: until then it
        # answers 503 tenant-not-provisioned, which the client retries (idempotent GET).
        client.retry = Retry(retries=100, base=0.2, cap=0.5)
        before = await client.preferences(subject_id)
        [ref] = await client.subject_refs([subject_id])
        assert before.subject_ref == ref
        async with httpx.AsyncClient(
            base_url=client._urls["preferences"],
            headers={"Authorization": f"Bearer {DEV_API_KEY}"},
        ) as raw:
            topic = await raw.put(
                "/v1/topics/sdk-news",
                json={"category": "marketing", "channels": ["email"], "labels": {"en": "News"}},
            )
            assert topic.status_code in (200, 201), topic.text
        with pytest.raises(MarketingConsentRequired):  # no marketing-email consent
            await client.change_preferences(subject_id, [{"topic": "sdk-news", "subscribed": True}])
        after = await client.unsubscribe(subject_id)
        assert after.all_marketing_unsubscribed is True
        assert after.subscribed("sdk-news") is False
        page = await client.list_members("sdk-news")
        assert ref not in [m.subject_ref for m in page.members]
        split = await client.filter_list("sdk-news", [ref])
        assert split.sendable == []
        assert [s["subject_ref"] for s in split.suppressed] == [ref]


def test_error_lookup_by_slug() -> None:
    assert error_class("subject-not-found") is SubjectNotFound
    assert error_class("some-new-slug", 404) is NotFound
    assert error_class("some-new-slug", 418) is ConsentryError
