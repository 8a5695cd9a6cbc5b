"""Receipt rules: per-tenant Ed25519 keys sealed at rest, receipts signed as compact JWS.

A receipt is a JWT (RFC 7519) signed with EdDSA/Ed25519 (RFC 8037) whose claims use the
Kantara Consent Receipt v1.1 field names (docs/receipts.md has the mapping). Signing uses
PyJWT: ~60 µs per receipt, of which ~35 µs is the Ed25519 signature itself; hand-rolled
`cryptography` + compact serialisation measured ~53 µs, not worth giving up the library.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from consentry.consent.db import tenant_transaction
from consentry.consent.receipts import repository
from consentry.consent.receipts.models import (
    Jwk,
    Jwks,
    ReceiptFacts,
    RotatedKey,
    SigningKey,
)
from consentry.consent.sealing import Sealer
from consentry.eventing.db import Connection, Pool

# "EdDSA", not RFC 9864's fully-specified "Ed25519": PyJWT and many verifiers know only the
# former yet (docs/receipts.md).
ALGORITHM = "EdDSA"
# Explicit typing (RFC 8725 §3.11): a receipt cannot be mistaken for, or replayed as, another
# kind of JWT (an access or ID token) by a verifier that checks `typ`, and vice versa.
RECEIPT_TYPE = "consent-receipt+jwt"
RECEIPT_VERSION = "KI-CR-v1.1.0"  # Kantara Consent Receipt Specification v1.1
ISSUER_PREFIX = "urn:consentry:tenant:"


class UnknownTenantError(LookupError):
    """No tenant with this id exists (so it has no receipt key)."""


def issuer(tenant_id: UUID) -> str:
    """The `iss` of the tenant's receipts."""
    return f"{ISSUER_PREFIX}{tenant_id}"


def seal_context(tenant_id: UUID, kid: str) -> str:
    """What a receipt key's sealed private key is bound to."""
    return f"tenant:{tenant_id}:receipt-key:{kid}"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(x: str) -> str:
    """RFC 7638 thumbprint (SHA-256, base64url) of the Ed25519 public JWK with `x`."""
    # The required members of an OKP key, in lexicographic order, without whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public JWK (RFC 8037) of an Ed25519 key, identified by its thumbprint."""
    x = _b64url(public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))
    kid = jwk_thumbprint(x)
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


async def _add_key(conn: Connection, tenant_id: UUID, sealer: Sealer) -> dict[str, str]:
    private_key = Ed25519PrivateKey.generate()
    jwk = public_jwk(private_key.public_key())
    raw = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    sealed = sealer.seal(raw, context=seal_context(tenant_id, jwk["kid"]))
    try:
        await repository.insert_key(
            conn, tenant_id=tenant_id, kid=jwk["kid"], public_jwk=jwk, sealed=sealed
        )
    except asyncpg.ForeignKeyViolationError:
        raise UnknownTenantError(f"tenant {tenant_id} does not exist") from None
    return jwk


def _require_transaction(conn: Connection) -> None:
    if not conn.is_in_transaction():
        raise RuntimeError("receipt keys change only inside a tenant-scoped transaction")


async def ensure_receipt_key(conn: Connection, tenant_id: UUID, sealer: Sealer) -> None:
    """Give the tenant an active receipt key unless it has one (idempotent).

    Runs in the caller's transaction, scoped to `tenant_id` (e.g. tenant creation).
    """
    _require_transaction(conn)
    await repository.lock_keys(conn, tenant_id=tenant_id)
    if await repository.active_kid(conn, tenant_id=tenant_id) is None:
        await _add_key(conn, tenant_id, sealer)


def receipt_key_seeder(sealer: Sealer) -> Callable[[Connection, UUID], Awaitable[None]]:
    """`ensure_receipt_key` bound to `sealer`, in the shape of a tenant-creation hook."""

    async def seed(conn: Connection, tenant_id: UUID) -> None:
        await ensure_receipt_key(conn, tenant_id, sealer)

    return seed


async def rotate_receipt_key(conn: Connection, tenant_id: UUID, sealer: Sealer) -> RotatedKey:
    """Retire the active key (it stays in the JWKS) and make a new one active."""
    _require_transaction(conn)
    await repository.lock_keys(conn, tenant_id=tenant_id)
    retired = await repository.retire_active(conn, tenant_id=tenant_id)
    jwk = await _add_key(conn, tenant_id, sealer)
    return RotatedKey(kid=jwk["kid"], retired_kid=retired, jwk=Jwk.model_validate(jwk))


async def load_signing_key(
    conn: Connection, tenant_id: UUID, sealer: Sealer, known: SigningKey | None = None
) -> SigningKey | None:
    """The tenant's active key unsealed (`known` again if still active), or None."""
    row = await repository.active_key(conn, tenant_id=tenant_id)
    if row is None:
        return None
    kid: str = row["kid"]
    if known is not None and known.kid == kid:
        return known
    raw = sealer.open(row["private_key_sealed"], context=seal_context(tenant_id, kid))
    return SigningKey(tenant_id, kid, Ed25519PrivateKey.from_private_bytes(raw))


async def tenant_jwks(pool: Pool, *, tenant_id: UUID) -> Jwks:
    """The tenant's own JWKS, read under its tenant scope."""
    async with tenant_transaction(pool, tenant_id) as conn:
        keys = await repository.public_jwks(conn, tenant_id=tenant_id)
    return Jwks(keys=[Jwk.model_validate(key) for key in keys])


async def public_tenant_jwks(pool: Pool, *, tenant_id: UUID) -> Jwks | None:
    """Any tenant's JWKS for anonymous verifiers; None when the tenant does not exist."""
    async with pool.acquire() as conn:
        keys = await repository.public_jwks_of(conn, tenant_id=tenant_id)
    return None if keys is None else Jwks(keys=[Jwk.model_validate(key) for key in keys])


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def receipt_claims(facts: ReceiptFacts) -> dict[str, Any]:
    """The receipt's JWT claims (Kantara CR v1.1 names; mapping in docs/receipts.md)."""
    purposes: list[dict[str, Any]] = []
    for decision in facts.decisions:
        purpose: dict[str, Any] = {
            "purpose": decision.purpose,
            "consentStatus": str(decision.status),
        }
        if decision.legal_basis is not None:
            purpose["legalBasis"] = decision.legal_basis
        if decision.consent_type is not None:
            purpose["consentType"] = decision.consent_type
        purposes.append(purpose)
    claims: dict[str, Any] = {
        "iss": issuer(facts.tenant_id),
        "sub": facts.subject_ref,
        "iat": int(facts.recorded_at.timestamp()),
        "jti": str(facts.receipt_id),
        "version": RECEIPT_VERSION,
        "consentTimestamp": int(facts.occurred_at.timestamp()),
        "collectionMethod": str(facts.method),
        "consentReceiptID": str(facts.receipt_id),
        "piiPrincipalId": facts.subject_ref,
        "piiControllers": [{"piiController": facts.controller}],
        "services": [{"service": facts.controller, "purposes": purposes}],
        "policyVersion": facts.policy_version,
        "consentTime": _rfc3339(facts.occurred_at),
        "recordedTime": _rfc3339(facts.recorded_at),
        "subjectVersion": facts.subject_version,
    }
    if facts.jurisdiction is not None:
        claims["jurisdiction"] = facts.jurisdiction
    if facts.policy_url is not None:
        claims["policyUrl"] = facts.policy_url
    if facts.source is not None:
        claims["collectionPoint"] = facts.source
    return claims


def sign_receipt(key: SigningKey, facts: ReceiptFacts) -> str:
    """The receipt of `facts` as a compact JWS signed with `key` (the facts' tenant's key)."""
    if key.tenant_id != facts.tenant_id:
        raise ValueError("a receipt is signed only with its own tenant's key")
    return jwt.encode(
        receipt_claims(facts),
        key.private_key,
        algorithm=ALGORITHM,
        headers={"kid": key.kid, "typ": RECEIPT_TYPE},
    )


class ReceiptSigner:
    """Signs receipts with each tenant's active key, unsealed once and cached in memory.

    A cached key is checked against the database again after `refresh_seconds`, so a
    rotation made by another process is used here within that time (meanwhile receipts
    carry the retired key, which stays in the JWKS and still verifies); a rotation through
    this signer takes effect at once. A tenant without a key gets one on first use.

    Loading a key borrows its own pool connection: a write path that holds a connection
    should `await signing_key(tenant_id)` before it acquires one (then `sign_loaded` inside
    its transaction, or `sign` after it), so a full pool cannot wait on itself.
    """

    def __init__(
        self,
        pool: Pool,
        sealer: Sealer,
        *,
        refresh_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._sealer = sealer
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._keys: dict[UUID, tuple[SigningKey, float]] = {}
        self._locks: dict[UUID, asyncio.Lock] = {}

    async def signing_key(self, tenant_id: UUID) -> SigningKey:
        """The tenant's active key (UnknownTenantError for a tenant that does not exist)."""
        cached = self._keys.get(tenant_id)
        if cached is not None and self._clock() - cached[1] < self._refresh_seconds:
            return cached[0]
        async with self._lock(tenant_id):
            cached = self._keys.get(tenant_id)  # another task may have loaded it meanwhile
            if cached is not None and self._clock() - cached[1] < self._refresh_seconds:
                return cached[0]
            key = await self._load(tenant_id, None if cached is None else cached[0])
            self._keys[tenant_id] = (key, self._clock())
            return key

    async def sign(self, facts: ReceiptFacts) -> str:
        """The signed receipt (compact JWS) of `facts`."""
        return sign_receipt(await self.signing_key(facts.tenant_id), facts)

    def sign_loaded(self, facts: ReceiptFacts) -> str:
        """Sign with the key already in memory, without awaiting (for batch paths that
        called `signing_key` first); LookupError when this tenant's key was never loaded."""
        cached = self._keys.get(facts.tenant_id)
        if cached is None:
            raise LookupError(f"no receipt key of tenant {facts.tenant_id} is loaded")
        return sign_receipt(cached[0], facts)

    async def rotate(self, tenant_id: UUID) -> RotatedKey:
        """Rotate the tenant's key; this signer uses the new one from now on."""
        async with self._lock(tenant_id):
            async with tenant_transaction(self._pool, tenant_id) as conn:
                rotated = await rotate_receipt_key(conn, tenant_id, self._sealer)
            self._keys.pop(tenant_id, None)
        return rotated

    def forget(self, tenant_id: UUID) -> None:
        """Drop the tenant's cached key (the next signature reloads it)."""
        self._keys.pop(tenant_id, None)

    def _lock(self, tenant_id: UUID) -> asyncio.Lock:
        return self._locks.setdefault(tenant_id, asyncio.Lock())

    async def _load(self, tenant_id: UUID, known: SigningKey | None) -> SigningKey:
        async with tenant_transaction(self._pool, tenant_id) as conn:
            key = await load_signing_key(conn, tenant_id, self._sealer, known)
            if key is None:
                await ensure_receipt_key(conn, tenant_id, self._sealer)
                key = await load_signing_key(conn, tenant_id, self._sealer)
        assert key is not None
        return key
