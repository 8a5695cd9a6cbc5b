"""Access exports (GDPR Art. 15): the sealed parts, the consent service's own part, the
assembled JSON and its short-lived signed download link (docs/rights-requests.md).

Each access request has its own X25519 key pair (the private key sealed under the master
key). Every service seals its part of a subject's export to the request's public key and
publishes it as `AccessPartReady`; the tracker keeps the sealed bytes. Only the API, when a
download link is used, opens them with the request's private key and builds the export: the
parts travel and rest encrypted, and nothing but the link's holder sees them in clear.

Part format (`proto/consentry/rights/v1/rights.proto`, `AccessPartReady.sealed_part`):
ephemeral X25519 public key (32 bytes) || AES-256-GCM nonce (12) || ciphertext and tag; the
key is HKDF-SHA256 of the X25519 shared secret (no salt, info `consentry access export v1`),
the associated data `<tenant>/<request>/<service>`, the plaintext UTF-8 JSON.

A download link is `/v1/rights-exports/<token>`: the token names tenant, request and expiry
and carries an HMAC-SHA256 under a key derived from the master key; it is valid for
`LINK_SECONDS` (15 minutes) and needs no API key, so it can be handed to the requester.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import struct
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from consentry.consent.db import tenant_transaction
from consentry.consent.rights.models import RequestKind, RequestState
from consentry.consent.rights.service import export_key_context, not_found
from consentry.consent.sealing import Sealer
from consentry.eventing.db import Connection, Pool
from consentry.eventing.sealing import open_part
from consentry.httpapi.problems import Problem

EXPORT_FORMAT = "consentry-access-export-v1"
LINK_SECONDS = 15 * 60
_LINK_CONTEXT = b"consentry export links v1"
_PAYLOAD = struct.Struct(">16s16sq")  # tenant, request, expiry (epoch seconds)

# The consent service's own part for each subject: its state, its full consent history with
# the proof of each decision, and the rights requests that cover it.
_CONSENT_PARTS = """
SELECT r.ref AS subject_ref,
  (SELECT json_build_object('version', s.version, 'is_child', s.is_child,
                            'child_flagged_at', s.child_flagged_at)
   FROM subjects s WHERE s.tenant_id = $1 AND s.subject_ref = r.ref)::text AS subject,
  (SELECT coalesce(json_agg(json_build_object(
              'purpose', c.purpose, 'status', c.status, 'policy_version', c.policy_version,
              'method', c.method, 'source', c.source, 'occurred_at', c.occurred_at,
              'needs_reconsent', c.needs_reconsent) ORDER BY c.purpose), '[]')
   FROM consents c WHERE c.tenant_id = $1 AND c.subject_ref = r.ref)::text AS consents,
  (SELECT coalesce(json_agg(json_build_object(
              'event_id', l.event_id, 'subject_version', l.subject_version,
              'purpose', l.purpose, 'status', l.status, 'policy_version', l.policy_version,
              'policy_url', p.url, 'method', l.method, 'source', l.source,
              'occurred_at', l.occurred_at, 'recorded_at', l.recorded_at, 'gpc', l.gpc,
              'client_fingerprint', l.client_fingerprint, 'receipt_id', l.receipt_id)
              ORDER BY l.subject_version), '[]')
   FROM consent_ledger l
   LEFT JOIN policy_versions p ON p.tenant_id = l.tenant_id AND p.version = l.policy_version
   WHERE l.tenant_id = $1 AND l.subject_ref = r.ref)::text AS proof,
  (SELECT coalesce(json_agg(json_build_object(
              'id', q.id, 'kind', q.kind, 'requester', q.requester, 'state', q.state,
              'received_at', q.received_at, 'closed_at', q.closed_at)
              ORDER BY q.received_at, q.id), '[]')
   FROM rights_request_subjects x
   JOIN rights_requests q ON q.tenant_id = x.tenant_id AND q.id = x.request_id
   WHERE x.tenant_id = $1 AND x.subject_ref = r.ref)::text AS requests
FROM unnest($2::text[]) AS r(ref)
"""
_REQUEST = """
SELECT kind, requester, state, received_at, closed_at, export_key_sealed
FROM rights_requests WHERE tenant_id = $1 AND id = $2
"""
_PARTS = """
SELECT subject_ref, service, sealed_part FROM rights_subject_services
WHERE tenant_id = $1 AND request_id = $2 AND sealed_part IS NOT NULL
ORDER BY subject_ref, service
"""


class LinkError(ValueError):
    """A download token that is malformed, forged or altered."""


class LinkExpiredError(LinkError):
    """A genuine download token past its expiry."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def consent_parts(
    conn: Connection, *, tenant_id: UUID, subject_refs: Sequence[str]
) -> dict[str, bytes]:
    """The consent service's part (UTF-8 JSON) for each subject, in `conn`'s tenant scope."""
    rows = await conn.fetch(_CONSENT_PARTS, tenant_id, list(subject_refs))
    parts = {}
    for row in rows:
        part = {
            "service": "consent",
            "subject_ref": row["subject_ref"],
            "subject": None if row["subject"] is None else json.loads(row["subject"]),
            "consents": json.loads(row["consents"]),
            "proof": json.loads(row["proof"]),
            "rights_requests": json.loads(row["requests"]),
        }
        parts[row["subject_ref"]] = json.dumps(part, separators=(",", ":")).encode()
    return parts


def link_key(master_key_b64: str) -> bytes:
    """The download links' HMAC key, derived from the master key (never stored)."""
    return hmac.new(base64.b64decode(master_key_b64), _LINK_CONTEXT, hashlib.sha256).digest()


class ExportLinks:
    """Issues and checks short-lived signed download tokens."""

    def __init__(self, key: bytes, *, seconds: int = LINK_SECONDS) -> None:
        self._key = key
        self._seconds = seconds

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, b"export-link|" + payload, hashlib.sha256).digest()

    def issue(self, tenant_id: UUID, request_id: UUID, now: datetime) -> tuple[str, datetime]:
        """A token for the request's export and when it expires."""
        expires = now.replace(microsecond=0) + timedelta(seconds=self._seconds)
        payload = _PAYLOAD.pack(tenant_id.bytes, request_id.bytes, int(expires.timestamp()))
        return f"{_b64(payload)}.{_b64(self._mac(payload))}", expires

    def check(self, token: str, now: datetime) -> tuple[UUID, UUID]:
        """(tenant, request) of a valid token; LinkError or LinkExpiredError otherwise."""
        try:
            payload_b64, _, mac_b64 = token.partition(".")
            payload, mac = _unb64(payload_b64), _unb64(mac_b64)
            tenant, request, expires = _PAYLOAD.unpack(payload)
        except (ValueError, struct.error) as exc:  # binascii.Error is a ValueError
            raise LinkError("malformed link") from exc
        if not hmac.compare_digest(mac, self._mac(payload)):
            raise LinkError("the link's signature does not match")
        if now.timestamp() >= expires:
            raise LinkExpiredError("the link has expired")
        return UUID(bytes=tenant), UUID(bytes=request)


def not_ready(state: str) -> Problem:
    """409: the request is not an access request that has completed."""
    return Problem(
        409,
        "export-not-ready",
        "No export to download",
        "an export exists once an access request has completed",
        state=state,
    )


async def issue_link(
    pool: Pool, links: ExportLinks, *, tenant_id: UUID, request_id: UUID, now: datetime
) -> tuple[str, datetime]:
    """A download token for the tenant's completed access request, and its expiry."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(_REQUEST, tenant_id, request_id)
    if row is None:
        raise not_found()
    if row["kind"] != RequestKind.ACCESS or row["state"] != RequestState.COMPLETED:
        raise not_ready(row["state"])
    return links.issue(tenant_id, request_id, now)


async def build_export(
    pool: Pool, *, tenant_id: UUID, request_id: UUID, sealer: Sealer, now: datetime
) -> dict[str, Any]:
    """Open every part of the completed access request and assemble its export."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await conn.fetchrow(_REQUEST, tenant_id, request_id)
        if row is None:
            raise not_found()
        if row["kind"] != RequestKind.ACCESS or row["state"] != RequestState.COMPLETED:
            raise not_ready(row["state"])
        parts = await conn.fetch(_PARTS, tenant_id, request_id)
    private_key = X25519PrivateKey.from_private_bytes(
        sealer.open(row["export_key_sealed"], context=export_key_context(tenant_id, request_id))
    )
    subjects: dict[str, dict[str, Any]] = {}
    for part in parts:
        opened = open_part(
            private_key,
            part["sealed_part"],
            tenant_id=tenant_id,
            request_id=request_id,
            service=part["service"],
        )
        subjects.setdefault(part["subject_ref"], {})[part["service"]] = json.loads(opened)
    return {
        "format": EXPORT_FORMAT,
        "generated_at": now.astimezone(UTC).isoformat(),
        "request": {
            "id": str(request_id),
            "kind": row["kind"],
            "requester": row["requester"],
            "received_at": row["received_at"].isoformat(),
            "completed_at": row["closed_at"].isoformat(),
        },
        "subjects": [
            {"subject_ref": ref, "services": services} for ref, services in subjects.items()
        ],
    }
