"""Signed link tokens of the unsubscribe and preference-center pages (no login, no cookie).

A token is `base64url(payload) "." base64url(mac)`, no padding. The payload (version 1):

    version (1 byte) | purpose (1) | tenant id (16) | subject ref (32, the hex ref's bytes)
    | expires, Unix seconds (4, big-endian) | locale (1: 0 none, 1 en, 2 sv)
    | topic length (1) | topic (ASCII, 0-63 bytes; empty: all marketing)

and the MAC is HMAC-SHA256 under the tenant's link key (`TenantKeys.link_key`) over a domain
label and the payload. The payload is not secret: the tenant id in it tells the server which
key to check the MAC with; the subject appears only as its pseudonymous reference.

Everything in the payload is covered by the MAC, so a token cannot be moved to another
subject, topic, tenant, purpose, expiry or language. Checking order matters: the MAC first
(constant-time), then the purpose, then the expiry, so an expired answer is only ever given
for a genuine token, and a forger learns nothing but "invalid".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from uuid import UUID

from consentry.preferences.topics.models import TOPIC_PATTERN

VERSION = 1
_MAC_LABEL = b"consentry link token v1\x00"
_HEADER = struct.Struct(">BB16s32sIBB")  # version, purpose, tenant, ref, expires, locale, len
_LOCALES = {None: 0, "en": 1, "sv": 2}
_LOCALE_OF = {code: locale for locale, code in _LOCALES.items()}
MAX_TOKEN_CHARS = 256  # a v1 token is at most ~170 characters
_TOPIC = re.compile(TOPIC_PATTERN)
_MAX_EXPIRY = 2**32 - 1


class Purpose(Enum):
    """What a token opens (a token for one page never opens the other)."""

    UNSUBSCRIBE = 1
    PREFERENCES = 2


class LinkError(Exception):
    """A token that must not be acted on."""


class InvalidLink(LinkError):  # noqa: N818 - reads as the outcome it is
    """Malformed, forged, altered, another tenant's, for the other page, or an unknown tenant."""


class ExpiredLink(LinkError):  # noqa: N818
    """A genuine token past its expiry."""


@dataclass(frozen=True)
class LinkClaims:
    """What a token is bound to."""

    purpose: Purpose
    tenant_id: UUID
    subject_ref: str
    expires_at: datetime
    topic: str | None = None  # unsubscribe only; None: all marketing
    locale: str | None = None  # "en" | "sv": the language the pages open in


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not text or "=" in text:
        raise InvalidLink("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidLink("not base64url") from None


def _valid_topic(topic: str) -> bool:
    return _TOPIC.fullmatch(topic) is not None


def _payload(claims: LinkClaims) -> bytes:
    topic = (claims.topic or "").encode("ascii")
    if claims.topic is not None and not _valid_topic(claims.topic):
        raise ValueError("not a topic name")
    if claims.purpose is Purpose.PREFERENCES and claims.topic is not None:
        raise ValueError("a preference-center link is not bound to a topic")
    if claims.locale not in _LOCALES:
        raise ValueError("locale is en, sv or None")
    expires = int(claims.expires_at.timestamp())
    if not 0 < expires <= _MAX_EXPIRY:
        raise ValueError("expiry out of range")
    ref = bytes.fromhex(claims.subject_ref)
    if len(ref) != 32:
        raise ValueError("a subject ref is 64 hex digits")
    header = _HEADER.pack(
        VERSION,
        claims.purpose.value,
        claims.tenant_id.bytes,
        ref,
        expires,
        _LOCALES[claims.locale],
        len(topic),
    )
    return header + topic


def _mac(link_key: bytes, payload: bytes) -> bytes:
    return hmac.new(link_key, _MAC_LABEL + payload, hashlib.sha256).digest()


def issue(link_key: bytes, claims: LinkClaims) -> str:
    """A token for `claims`, signed with the tenant's link key."""
    payload = _payload(claims)
    return f"{_b64encode(payload)}.{_b64encode(_mac(link_key, payload))}"


def _split(token: str) -> tuple[bytes, bytes]:
    if len(token) > MAX_TOKEN_CHARS or token.count(".") != 1:
        raise InvalidLink("not a token")
    encoded_payload, encoded_mac = token.split(".")
    return _b64decode(encoded_payload), _b64decode(encoded_mac)


def _claims(payload: bytes) -> LinkClaims:
    if len(payload) < _HEADER.size or payload[0] != VERSION:
        raise InvalidLink("unknown version or too short")
    _, purpose, tenant, ref, expires, locale, length = _HEADER.unpack_from(payload)
    topic_bytes = payload[_HEADER.size :]
    if len(topic_bytes) != length or locale not in _LOCALE_OF:
        raise InvalidLink("malformed payload")
    try:
        kind = Purpose(purpose)
        topic = topic_bytes.decode("ascii") if topic_bytes else None
    except (ValueError, UnicodeDecodeError):
        raise InvalidLink("malformed payload") from None
    if topic is not None and not _valid_topic(topic):
        raise InvalidLink("malformed topic")
    return LinkClaims(
        purpose=kind,
        tenant_id=UUID(bytes=tenant),
        subject_ref=ref.hex(),
        expires_at=datetime.fromtimestamp(expires, UTC),
        topic=topic,
        locale=_LOCALE_OF[locale],
    )


def claimed_tenant(token: str) -> UUID:
    """The tenant a token names, NOT yet verified: only to find the key to verify it with."""
    payload, _ = _split(token)
    return _claims(payload).tenant_id


def verify(link_key: bytes, token: str, *, purpose: Purpose, now: datetime) -> LinkClaims:
    """The token's claims if it is genuine (MAC under `link_key`), for `purpose`, and not
    expired at `now`. Raises InvalidLink or ExpiredLink."""
    payload, mac = _split(token)
    claims = _claims(payload)
    if not hmac.compare_digest(mac, _mac(link_key, payload)):
        raise InvalidLink("bad MAC")
    if claims.purpose is not purpose:
        raise InvalidLink("token for another page")
    if now >= claims.expires_at:
        raise ExpiredLink("expired")
    return claims
