"""Link tokens (HMAC under the tenant's link key) and the API that makes the links."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consentry.preferences.links import tokens
from consentry.preferences.links.i18n import MESSAGES, choose_language
from consentry.preferences.links.tokens import ExpiredLink, InvalidLink, LinkClaims, Purpose

from .conftest import TENANT_ID, ref_of

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
REF = ref_of("someone@example.com")
SUBJECT = "someone@example.com"


def _claims(**overrides: object) -> LinkClaims:
    values: dict[str, object] = {
        "purpose": Purpose.UNSUBSCRIBE,
        "tenant_id": TENANT_ID,
        "subject_ref": REF,
        "expires_at": NOW + timedelta(days=365),
        "topic": "product-news",
        "locale": "sv",
    }
    values.update(overrides)
    return LinkClaims(**values)  # type: ignore[arg-type]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_token_round_trips_and_is_compact_and_url_safe() -> None:
    token = tokens.issue(KEY, _claims())
    assert len(token) < 160
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")
    claims = tokens.verify(KEY, token, purpose=Purpose.UNSUBSCRIBE, now=NOW)
    assert claims == _claims()
    assert tokens.claimed_tenant(token) == TENANT_ID
    everything = tokens.issue(KEY, _claims(topic=None, locale=None))
    assert tokens.verify(KEY, everything, purpose=Purpose.UNSUBSCRIBE, now=NOW).topic is None


def test_a_forged_mac_is_invalid() -> None:
    payload, mac = tokens.issue(KEY, _claims()).split(".")
    forged = bytearray(_unb64(mac))
    forged[0] ^= 1
    with pytest.raises(InvalidLink):
        tokens.verify(KEY, f"{payload}.{_b64(bytes(forged))}", purpose=Purpose.UNSUBSCRIBE, now=NOW)
    with pytest.raises(InvalidLink):
        tokens.verify(KEY, f"{payload}.{_b64(bytes(32))}", purpose=Purpose.UNSUBSCRIBE, now=NOW)


@pytest.mark.parametrize(
    "altered",
    [
        {"topic": "partner-offers"},
        {"topic": None},
        {"subject_ref": ref_of("someone-else@example.com")},
        {"tenant_id": uuid.uuid4()},
        {"expires_at": NOW + timedelta(days=3650)},
        {"locale": "en"},
        {"purpose": Purpose.PREFERENCES, "topic": None},
    ],
)
def test_an_altered_payload_with_the_original_mac_is_invalid(altered: dict[str, object]) -> None:
    _, mac = tokens.issue(KEY, _claims()).split(".")
    other_payload, _ = tokens.issue(KEY, _claims(**altered)).split(".")
    for purpose in Purpose:
        with pytest.raises(InvalidLink):
            tokens.verify(KEY, f"{other_payload}.{mac}", purpose=purpose, now=NOW)


def test_another_key_wrong_purpose_and_expiry_are_refused() -> None:
    token = tokens.issue(KEY, _claims())
    with pytest.raises(InvalidLink):
        tokens.verify(OTHER_KEY, token, purpose=Purpose.UNSUBSCRIBE, now=NOW)
    with pytest.raises(InvalidLink):
        tokens.verify(KEY, token, purpose=Purpose.PREFERENCES, now=NOW)
    expired = tokens.issue(KEY, _claims(expires_at=NOW - timedelta(seconds=1)))
    with pytest.raises(ExpiredLink):
        tokens.verify(KEY, expired, purpose=Purpose.UNSUBSCRIBE, now=NOW)
    # Expiry is only reported for genuine tokens.
    with pytest.raises(InvalidLink):
        tokens.verify(OTHER_KEY, expired, purpose=Purpose.UNSUBSCRIBE, now=NOW)


@pytest.mark.parametrize(
    "token",
    ["", ".", "abc", "a.b.c", "a=.b", "!!!.???", "x" * 300 + ".y", "AQ.AQ", "AA" * 40 + ".AA"],
)
def test_malformed_tokens_are_invalid(token: str) -> None:
    with pytest.raises(InvalidLink):
        tokens.verify(KEY, token, purpose=Purpose.UNSUBSCRIBE, now=NOW)


@given(st.text(max_size=300))
def test_any_string_is_either_a_link_error_or_nothing(text: str) -> None:
    with pytest.raises(tokens.LinkError):
        tokens.verify(KEY, text, purpose=Purpose.UNSUBSCRIBE, now=NOW)


def test_claims_that_cannot_be_encoded_are_refused() -> None:
    with pytest.raises(ValueError, match="topic"):
        tokens.issue(KEY, _claims(topic="Not A Topic"))
    with pytest.raises(ValueError, match="preference-center"):
        tokens.issue(KEY, _claims(purpose=Purpose.PREFERENCES))
    with pytest.raises(ValueError, match="64 hex"):
        tokens.issue(KEY, _claims(subject_ref="ab"))


def test_both_languages_have_every_text() -> None:
    assert set(MESSAGES["en"]) == set(MESSAGES["sv"])
    assert all(MESSAGES["sv"][key] != "" for key in MESSAGES["sv"])


@pytest.mark.parametrize(
    ("query", "locale", "accept", "expected"),
    [
        ("sv", "en", "en", "sv"),
        (None, "sv", "en", "sv"),
        ("xx", None, "sv-SE,sv;q=0.9,en;q=0.8", "sv"),
        (None, None, "de-DE, en;q=0.5, sv;q=0.7", "sv"),
        (None, None, "sv;q=0, en;q=0.1", "en"),
        (None, None, "de", "en"),
        (None, None, "", "en"),
    ],
)
def test_the_language_is_chosen_by_query_then_link_then_browser(
    query: str | None, locale: str | None, accept: str, expected: str
) -> None:
    assert choose_language(query, locale, {"accept-language": accept}) == expected


async def test_an_unsubscribe_link_comes_with_its_mail_headers(
    client: httpx.AsyncClient, topics: list[str]
) -> None:
    before = datetime.now(UTC)
    response = await client.post(
        f"/v1/subjects/{SUBJECT}/unsubscribe-links", json={"topic": "product-news", "locale": "sv"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    url = body["url"]
    assert url.startswith("http://preferences.test/u/")
    assert body["headers"] == {
        "List-Unsubscribe": f"<{url}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    assert body["preference_center_url"].startswith("http://preferences.test/p/")
    expires = datetime.fromisoformat(body["expires_at"])
    assert before + timedelta(days=365) - timedelta(seconds=5) <= expires
    assert expires <= datetime.now(UTC) + timedelta(days=365)
    center_expires = datetime.fromisoformat(body["preference_center_expires_at"])
    assert center_expires < before + timedelta(days=31)
    # What the token holds: tenant, the subject's pseudonymous ref, topic, locale.
    token = url.rsplit("/", 1)[1]
    assert tokens.claimed_tenant(token) == TENANT_ID
    payload = _unb64(token.split(".")[0])
    assert payload[18:50].hex() == ref_of(SUBJECT)
    assert payload.endswith(b"product-news")
    assert SUBJECT.encode() not in payload


async def test_all_marketing_links_and_preference_links(
    client: httpx.AsyncClient, topics: list[str]
) -> None:
    everything = await client.post(f"/v1/subjects/{SUBJECT}/unsubscribe-links")
    assert everything.status_code == 200, everything.text
    token = everything.json()["url"].rsplit("/", 1)[1]
    assert _unb64(token.split(".")[0])[55] == 0  # no topic: all marketing
    center = await client.post(f"/v1/subjects/{SUBJECT}/preference-links", json={"locale": "en"})
    assert center.status_code == 200, center.text
    assert center.json()["url"].startswith("http://preferences.test/p/")
    assert datetime.fromisoformat(center.json()["expires_at"]) > datetime.now(UTC)


async def test_transactional_and_unknown_topics_get_no_unsubscribe_link(
    client: httpx.AsyncClient, topics: list[str]
) -> None:
    transactional = await client.post(
        f"/v1/subjects/{SUBJECT}/unsubscribe-links", json={"topic": "receipts"}
    )
    assert transactional.status_code == 422
    assert transactional.json()["type"] == "urn:consentry:problem:topic-not-unsubscribable"
    unknown = await client.post(
        f"/v1/subjects/{SUBJECT}/unsubscribe-links", json={"topic": "no-such-topic"}
    )
    assert unknown.status_code == 422
    assert unknown.json()["type"] == "urn:consentry:problem:unknown-topic"
    bad_locale = await client.post(
        f"/v1/subjects/{SUBJECT}/unsubscribe-links", json={"locale": "de"}
    )
    assert bad_locale.status_code == 422


async def test_making_links_needs_an_api_key(client: httpx.AsyncClient, topics: list[str]) -> None:
    response = await client.post(
        f"/v1/subjects/{SUBJECT}/unsubscribe-links", headers={"Authorization": "Bearer wrong-key"}
    )
    assert response.status_code == 401
    response = await client.post(
        f"/v1/subjects/{SUBJECT}/preference-links", headers={"Authorization": ""}
    )
    assert response.status_code == 401
