"""Signed consent receipts against a real PostgreSQL: verified offline with only the JWKS.

Verification here never uses consentry's code: it runs the example of docs/receipts.md,
which uses jwcrypto (the signing path uses PyJWT).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from fastapi import FastAPI
from jwcrypto import jwk as jwcrypto_jwk  # type: ignore[import-untyped]
from jwcrypto import jws as jwcrypto_jws
from jwcrypto.common import JWException  # type: ignore[import-untyped]

from consentry.consent.app import create_app
from consentry.consent.consents.models import ConsentMethod, ConsentStatus
from consentry.consent.db import set_tenant
from consentry.consent.receipts.models import ReceiptDecision, ReceiptFacts, SigningKey
from consentry.consent.receipts.service import (
    ReceiptSigner,
    UnknownTenantError,
    ensure_receipt_key,
    jwk_thumbprint,
    seal_context,
    sign_receipt,
)
from consentry.consent.sealing import MasterKeySettings, Sealer, SealingError
from consentry.consent.settings import ApiSettings
from consentry.consent.tenants import service as tenants
from consentry.httpapi.auth import ALL_SCOPES, KeyResolver, Principal

from .conftest import API_KEY, TENANT_ID

pytestmark = pytest.mark.integration

DOCS = Path(__file__).resolve().parents[3] / "docs" / "receipts.md"
PROBLEM = "application/problem+json"
READ_ONLY_KEY = "receipts-test-read-only-key"
OTHER_ADMIN_KEY = "receipts-test-other-tenant-admin"
OTHER_TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000b2")
APP_ROLE = "consentry_receipts_test_app"


def verifier() -> Callable[[str, dict[str, Any], str], dict[str, Any]]:
    """`verify_receipt` from the runnable example in docs/receipts.md (what third parties run)."""
    text = DOCS.read_text()
    marker = text.index("<!-- verify-example -->")
    block = re.search(r"```python\n(.*?)```", text[marker:], re.DOTALL)
    assert block is not None, "docs/receipts.md lost its verification example"
    namespace: dict[str, Any] = {}
    exec(compile(block.group(1), str(DOCS), "exec"), namespace)
    verify: Callable[[str, dict[str, Any], str], dict[str, Any]] = namespace["verify_receipt"]
    return verify


verify_receipt = verifier()


def sealer() -> Sealer:
    return MasterKeySettings(environment="test").sealer()


def facts(tenant_id: uuid.UUID = TENANT_ID, **changes: Any) -> ReceiptFacts:
    occurred = datetime(2026, 11, 29, 9, 30, 15, 250000, tzinfo=UTC)
    base = ReceiptFacts(
        receipt_id=uuid.uuid4(),
        tenant_id=tenant_id,
        controller="Acme Learning AB",
        subject_ref="ab" * 32,
        decisions=(
            ReceiptDecision("performance", ConsentStatus.GIVEN, "consent", "EXPLICIT"),
            ReceiptDecision("targeting", ConsentStatus.WITHDRAWN),
        ),
        policy_version="2026-01",
        policy_url="https://acme.example/privacy/2026-01",
        method=ConsentMethod.BANNER,
        source="web-banner",
        occurred_at=occurred,
        recorded_at=occurred + timedelta(seconds=1),
        subject_version=3,
        jurisdiction="SE",
    )
    return dataclasses.replace(base, **changes)


def segments(receipt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims of a compact JWS, unverified."""

    def part(value: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(
            base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        )
        return decoded

    header, payload, _ = receipt.split(".")
    return part(header), part(payload)


def rejection(receipt: str, jwks: dict[str, Any], tenant_id: uuid.UUID = TENANT_ID) -> str:
    """Why the documented verifier refuses `receipt` (it must refuse it)."""
    with pytest.raises(JWException) as caught:
        verify_receipt(receipt, jwks, str(tenant_id))
    return str(caught.value.__cause__ or caught.value)


def assert_bad_signature(receipt: str, jwk: dict[str, Any]) -> None:
    """The signature of `receipt` does not verify under `jwk` (checked with that key alone)."""
    with pytest.raises(jwcrypto_jws.InvalidJWSSignature):
        jwcrypto_jws.JWS().deserialize(receipt, key=jwcrypto_jwk.JWK(**jwk))


def b64url_json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


class ExtraKeys:
    """The dev key, plus a read-only key of the dev tenant and an admin key of another."""

    def __init__(self, fallback: KeyResolver) -> None:
        self._fallback = fallback
        self._keys = {
            READ_ONLY_KEY: Principal(TENANT_ID, frozenset({"consent:read"}), "read-only"),
            OTHER_ADMIN_KEY: Principal(OTHER_TENANT, frozenset(ALL_SCOPES), "other-admin"),
        }

    async def resolve(self, key: str) -> Principal | None:
        return self._keys.get(key) or await self._fallback.resolve(key)


async def create_tenant(db: asyncpg.Connection, tenant_id: uuid.UUID, name: str) -> None:
    """Create a tenant through the tenants domain (as the owner), without a receipt key."""
    kwargs: dict[str, Any] = {"tenant_id": tenant_id, "name": name}
    if "sealer" in inspect.signature(tenants.ensure_tenant).parameters:
        kwargs["sealer"] = sealer()
    async with db.transaction():
        await set_tenant(db, tenant_id)
        await tenants.ensure_tenant(db, **kwargs)


async def key_count(db: asyncpg.Connection, tenant_id: uuid.UUID, *, active: bool = False) -> int:
    where = " AND retired_at IS NULL" if active else ""
    count: int = await db.fetchval(
        f"SELECT count(*) FROM receipt_keys WHERE tenant_id = $1{where}", tenant_id
    )
    return count


async def add_receipt_key(db: asyncpg.Connection, tenant_id: uuid.UUID) -> None:
    async with db.transaction():
        await set_tenant(db, tenant_id)
        await ensure_receipt_key(db, tenant_id, sealer())


@pytest_asyncio.fixture
async def app(api_settings: ApiSettings) -> AsyncIterator[FastAPI]:
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        app.state.key_resolver = ExtraKeys(app.state.key_resolver)
        await signer_of(app).signing_key(TENANT_ID)  # the dev tenant's key exists from here on
        yield app


@pytest_asyncio.fixture
async def api(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An API client without any key; tests add the one they mean."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://consent") as client:
        yield client


def auth(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def signer_of(app: FastAPI) -> ReceiptSigner:
    signer: ReceiptSigner = app.state.receipt_signer
    return signer


async def public_jwks(api: httpx.AsyncClient, tenant_id: uuid.UUID) -> dict[str, Any]:
    response = await api.get(f"/v1/tenants/{tenant_id}/jwks.json")
    assert response.status_code == 200, response.text
    jwks: dict[str, Any] = response.json()
    return jwks


async def test_receipt_verifies_offline_with_only_the_jwks(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    given = facts()
    receipt = await signer_of(app).sign(given)

    response = await api.get(f"/v1/tenants/{TENANT_ID}/jwks.json")  # no API key
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "public, max-age=300"
    jwks = response.json()
    claims = verify_receipt(receipt, jwks, str(TENANT_ID))

    assert claims == {
        "iss": f"urn:consentry:tenant:{TENANT_ID}",
        "sub": "ab" * 32,
        "iat": int(given.recorded_at.timestamp()),
        "jti": str(given.receipt_id),
        "version": "KI-CR-v1.1.0",
        "jurisdiction": "SE",
        "consentTimestamp": int(given.occurred_at.timestamp()),
        "collectionMethod": "banner",
        "consentReceiptID": str(given.receipt_id),
        "piiPrincipalId": "ab" * 32,
        "piiControllers": [{"piiController": "Acme Learning AB"}],
        "policyUrl": "https://acme.example/privacy/2026-01",
        "policyVersion": "2026-01",
        "services": [
            {
                "service": "Acme Learning AB",
                "purposes": [
                    {
                        "purpose": "performance",
                        "consentStatus": "given",
                        "legalBasis": "consent",
                        "consentType": "EXPLICIT",
                    },
                    {"purpose": "targeting", "consentStatus": "withdrawn"},
                ],
            }
        ],
        "collectionPoint": "web-banner",
        "consentTime": "2026-11-29T09:30:15.250000Z",
        "recordedTime": "2026-11-29T09:30:16.250000Z",
        "subjectVersion": 3,
    }
    header, _ = segments(receipt)
    (key,) = jwks["keys"]
    assert header == {"alg": "EdDSA", "kid": key["kid"], "typ": "consent-receipt+jwt"}
    # kid is the RFC 7638 thumbprint, as an independent library computes it
    assert key["kid"] == jwcrypto_jwk.JWK(**key).thumbprint()
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}  # public members only


async def test_optional_facts_are_left_out_of_the_receipt(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    given = facts(policy_url=None, source=None, jurisdiction=None, method=ConsentMethod.GPC)
    claims = verify_receipt(
        await signer_of(app).sign(given), await public_jwks(api, TENANT_ID), str(TENANT_ID)
    )
    assert "policyUrl" not in claims
    assert "collectionPoint" not in claims
    assert "jurisdiction" not in claims
    assert claims["collectionMethod"] == "gpc"


async def test_tampered_receipts_fail(app: FastAPI, api: httpx.AsyncClient) -> None:
    receipt = await signer_of(app).sign(facts())
    jwks = await public_jwks(api, TENANT_ID)
    header_b64, _, signature = receipt.split(".")
    header, claims = segments(receipt)
    claims["services"][0]["purposes"][1]["consentStatus"] = "given"
    forged_claims = f"{header_b64}.{b64url_json(claims)}.{signature}"
    forged_header = f"{b64url_json({**header, 'typ': 'JWT'})}.{receipt.split('.')[1]}.{signature}"
    truncated = receipt[:-4]
    for forged in (forged_claims, forged_header, truncated):
        assert "No working key" in rejection(forged, jwks)
    for forged in (forged_claims, forged_header):
        assert_bad_signature(forged, jwks["keys"][0])
    assert verify_receipt(receipt, jwks, str(TENANT_ID))["jti"]  # the original still verifies


async def test_another_tenants_jwks_does_not_verify(
    app: FastAPI, api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    await create_tenant(db, OTHER_TENANT, "Other Org")
    receipt = await signer_of(app).sign(facts())
    other_receipt = await signer_of(app).sign(facts(OTHER_TENANT, controller="Other Org"))
    jwks = await public_jwks(api, TENANT_ID)
    other = await public_jwks(api, OTHER_TENANT)
    (mine,), (theirs,) = jwks["keys"], other["keys"]
    assert mine["kid"] != theirs["kid"]

    assert rejection(receipt, other)  # no key with the receipt's kid
    relabelled = {"keys": [{**theirs, "kid": mine["kid"]}]}  # the kid matches, the key does not
    assert rejection(receipt, relabelled)
    assert_bad_signature(receipt, relabelled["keys"][0])
    # the other tenant's own receipt verifies with its own JWKS and names its own issuer
    assert verify_receipt(other_receipt, other, str(OTHER_TENANT))["iss"].endswith(
        str(OTHER_TENANT)
    )
    with pytest.raises(ValueError, match="another tenant"):
        verify_receipt(other_receipt, other, str(TENANT_ID))


async def test_rotation_keeps_old_receipts_verifiable(
    app: FastAPI, api: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    signer = signer_of(app)
    old_receipt = await signer.sign(facts())
    old_kid = segments(old_receipt)[0]["kid"]

    response = await api.post("/v1/receipt-keys/rotate", headers=auth())
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["retired_kid"] == old_kid
    assert rotated["kid"] != old_kid
    assert rotated["jwk"]["kid"] == rotated["kid"]

    new_receipt = await signer.sign(facts())
    assert segments(new_receipt)[0]["kid"] == rotated["kid"]  # this process: at once
    jwks = await public_jwks(api, TENANT_ID)
    assert sorted(k["kid"] for k in jwks["keys"]) == sorted([old_kid, rotated["kid"]])
    for receipt in (old_receipt, new_receipt):
        assert verify_receipt(receipt, jwks, str(TENANT_ID))["iss"].endswith(str(TENANT_ID))

    own = await api.get("/v1/receipt-keys", headers=auth())
    assert own.status_code == 200
    assert own.json() == jwks
    rows = await db.fetch(
        "SELECT kid, retired_at FROM receipt_keys WHERE tenant_id = $1", TENANT_ID
    )
    assert {r["kid"]: r["retired_at"] is None for r in rows} == {
        old_kid: False,
        rotated["kid"]: True,
    }


async def test_another_process_uses_the_rotated_key_after_its_refresh(
    app: FastAPI, api: httpx.AsyncClient, consent_db: str
) -> None:
    now = [1000.0]
    pool = await asyncpg.create_pool(consent_db, min_size=1, max_size=2)
    assert pool is not None
    try:
        elsewhere = ReceiptSigner(pool, sealer(), refresh_seconds=60, clock=lambda: now[0])
        old_kid = (await elsewhere.signing_key(TENANT_ID)).kid
        rotated = await signer_of(app).rotate(TENANT_ID)
        now[0] += 59
        stale = await elsewhere.sign(facts())
        assert segments(stale)[0]["kid"] == old_kid  # still cached: the retired key
        now[0] += 2
        fresh = await elsewhere.sign(facts())
        assert segments(fresh)[0]["kid"] == rotated.kid
        jwks = await public_jwks(api, TENANT_ID)
        for receipt in (stale, fresh):  # both verify: retired keys stay in the JWKS
            verify_receipt(receipt, jwks, str(TENANT_ID))
    finally:
        await pool.close()


async def test_rotation_needs_the_admin_scope_and_keys_need_a_key(api: httpx.AsyncClient) -> None:
    forbidden = await api.post("/v1/receipt-keys/rotate", headers=auth(READ_ONLY_KEY))
    assert forbidden.status_code == 403
    assert forbidden.headers["content-type"] == PROBLEM
    assert forbidden.json()["type"] == "urn:consentry:problem:forbidden"
    assert (await api.post("/v1/receipt-keys/rotate")).status_code == 401
    assert (await api.get("/v1/receipt-keys")).status_code == 401
    readable = await api.get("/v1/receipt-keys", headers=auth(READ_ONLY_KEY))
    assert readable.status_code == 200
    assert len(readable.json()["keys"]) == 1


async def test_rotation_is_per_tenant(api: httpx.AsyncClient, db: asyncpg.Connection) -> None:
    await create_tenant(db, OTHER_TENANT, "Other Org")
    await add_receipt_key(db, OTHER_TENANT)
    mine_before = await public_jwks(api, TENANT_ID)
    response = await api.post("/v1/receipt-keys/rotate", headers=auth(OTHER_ADMIN_KEY))
    assert response.status_code == 200
    assert await public_jwks(api, TENANT_ID) == mine_before
    assert len((await public_jwks(api, OTHER_TENANT))["keys"]) == 2


async def test_unknown_tenant_has_no_jwks(api: httpx.AsyncClient) -> None:
    response = await api.get(f"/v1/tenants/{uuid.uuid4()}/jwks.json")
    assert response.status_code == 404
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:consentry:problem:tenant-not-found"
    malformed = await api.get("/v1/tenants/not-a-uuid/jwks.json")
    assert malformed.status_code == 422
    assert malformed.json()["type"] == "urn:consentry:problem:validation-error"


async def test_private_keys_are_sealed_and_open_only_in_their_context(
    app: FastAPI, db: asyncpg.Connection
) -> None:
    await create_tenant(db, OTHER_TENANT, "Other Org")
    await add_receipt_key(db, OTHER_TENANT)
    key = await signer_of(app).signing_key(TENANT_ID)
    row = await db.fetchrow(
        "SELECT kid, public_jwk::text AS jwk, private_key_sealed FROM receipt_keys "
        "WHERE tenant_id = $1",
        TENANT_ID,
    )
    assert row is not None
    assert row["kid"] == key.kid
    raw = sealer().open(row["private_key_sealed"], context=seal_context(TENANT_ID, key.kid))
    assert raw == key.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    assert raw not in row["private_key_sealed"]
    assert base64.urlsafe_b64encode(raw).rstrip(b"=").decode() not in row["jwk"]
    assert '"d"' not in row["jwk"]
    other_kid = await db.fetchval("SELECT kid FROM receipt_keys WHERE tenant_id = $1", OTHER_TENANT)
    for wrong in (seal_context(OTHER_TENANT, key.kid), seal_context(TENANT_ID, other_kid)):
        with pytest.raises(SealingError):
            sealer().open(row["private_key_sealed"], context=wrong)
    with pytest.raises(SealingError):
        Sealer(b"\x07" * 32).open(
            row["private_key_sealed"], context=seal_context(TENANT_ID, key.kid)
        )


@pytest_asyncio.fixture
async def app_db(consent_db: str) -> str:
    """DSN of a non-superuser login role in the consent group role: RLS applies to it."""
    from consentry.devstack.postgres import ensure_login_role, with_user

    await ensure_login_role(consent_db, APP_ROLE, "consentry_consent_rw")
    return with_user(consent_db, APP_ROLE)


async def test_row_level_security_isolates_receipt_keys(
    app: FastAPI, db: asyncpg.Connection, app_db: str
) -> None:
    await create_tenant(db, OTHER_TENANT, "Other Org")
    await add_receipt_key(db, OTHER_TENANT)
    mine = (await signer_of(app).signing_key(TENANT_ID)).kid
    conn = await asyncpg.connect(app_db)
    try:
        assert not await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        assert await conn.fetchval("SELECT count(*) FROM receipt_keys") == 0  # no tenant set
        async with conn.transaction():
            await set_tenant(conn, OTHER_TENANT)
            kids = [r["kid"] for r in await conn.fetch("SELECT kid FROM receipt_keys")]
            assert len(kids) == 1
            assert mine not in kids
            assert await key_count(conn, TENANT_ID) == 0
            updated = await conn.execute(
                "UPDATE receipt_keys SET retired_at = now() WHERE tenant_id = $1", TENANT_ID
            )
            assert updated == "UPDATE 0"
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="row-level security"):
            async with conn.transaction():
                await set_tenant(conn, OTHER_TENANT)
                await conn.execute(
                    "INSERT INTO receipt_keys (tenant_id, kid, public_jwk, private_key_sealed) "
                    """VALUES ($1, 'k', '{"kid": "k", "kty": "OKP", "crv": "Ed25519"}', '')""",
                    TENANT_ID,
                )
        for statement in (
            "DELETE FROM receipt_keys",
            "UPDATE receipt_keys SET public_jwk = '{}'",
            "UPDATE receipt_keys SET private_key_sealed = ''",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                async with conn.transaction():
                    await set_tenant(conn, OTHER_TENANT)
                    await conn.execute(statement)
        # The public JWKS function reads any tenant's public keys and nothing else, and
        # leaves the caller's tenant scope as it was.
        async with conn.transaction():
            await set_tenant(conn, OTHER_TENANT)
            published = json.loads(
                await conn.fetchval("SELECT consentry_receipt_jwks($1)::text", TENANT_ID)
            )
            assert [k["kid"] for k in published] == [mine]
            assert all("d" not in k for k in published)
            scope = await conn.fetchval("SELECT current_setting('consentry.tenant_id')")
            assert scope == str(OTHER_TENANT)
        assert await conn.fetchval("SELECT consentry_receipt_jwks($1)", uuid.uuid4()) is None
        async with conn.transaction():  # no scope before the call, none after it
            assert await conn.fetchval("SELECT consentry_receipt_jwks($1)", TENANT_ID)
            assert await conn.fetchval("SELECT consentry_tenant()") is None
            assert await conn.fetchval("SELECT count(*) FROM receipt_keys") == 0
    finally:
        await conn.close()


async def test_the_application_role_can_seed_sign_and_rotate(
    api: httpx.AsyncClient, db: asyncpg.Connection, app_db: str
) -> None:
    await create_tenant(db, OTHER_TENANT, "Other Org")  # no receipt key yet
    pool = await asyncpg.create_pool(app_db, min_size=1, max_size=2)
    assert pool is not None
    try:
        signer = ReceiptSigner(pool, sealer())
        first = await signer.sign(facts(OTHER_TENANT))  # seeds the key on first use
        rotated = await signer.rotate(OTHER_TENANT)
        second = await signer.sign(facts(OTHER_TENANT))
    finally:
        await pool.close()
    jwks = await public_jwks(api, OTHER_TENANT)
    assert segments(first)[0]["kid"] == rotated.retired_kid
    assert segments(second)[0]["kid"] == rotated.kid
    for receipt in (first, second):
        verify_receipt(receipt, jwks, str(OTHER_TENANT))


async def test_first_use_creates_exactly_one_key_under_concurrency(
    db: asyncpg.Connection, consent_db: str
) -> None:
    await create_tenant(db, OTHER_TENANT, "Other Org")
    pools = [await asyncpg.create_pool(consent_db, min_size=1, max_size=5) for _ in range(2)]
    try:
        signers = [ReceiptSigner(pool, sealer()) for pool in pools if pool is not None]
        receipts = await asyncio.gather(
            *(signers[n % 2].sign(facts(OTHER_TENANT)) for n in range(20))
        )
    finally:
        for pool in pools:
            if pool is not None:
                await pool.close()
    assert len({segments(r)[0]["kid"] for r in receipts}) == 1
    assert await key_count(db, OTHER_TENANT) == 1
    await add_receipt_key(db, OTHER_TENANT)  # idempotent
    assert await key_count(db, OTHER_TENANT) == 1


async def test_concurrent_rotations_leave_one_active_key(
    app: FastAPI, db: asyncpg.Connection, consent_db: str
) -> None:
    first = (await signer_of(app).signing_key(TENANT_ID)).kid
    pools = [await asyncpg.create_pool(consent_db, min_size=1, max_size=3) for _ in range(3)]
    try:
        # separate signers, as in separate processes: only the database serialises them
        signers = [ReceiptSigner(pool, sealer()) for pool in pools if pool is not None]
        rotations = await asyncio.gather(*(signers[n % 3].rotate(TENANT_ID) for n in range(6)))
    finally:
        for pool in pools:
            if pool is not None:
                await pool.close()
    retired = {r.retired_kid for r in rotations}
    assert first in retired
    assert len(retired) == 6  # each rotation retired a different key: they were serialised
    assert await key_count(db, TENANT_ID, active=True) == 1
    assert await key_count(db, TENANT_ID) == 7


async def test_signing_for_an_unknown_tenant_fails_and_writes_nothing(
    app: FastAPI, db: asyncpg.Connection
) -> None:
    with pytest.raises(UnknownTenantError):
        await signer_of(app).sign(facts(uuid.uuid4()))
    assert await db.fetchval("SELECT count(*) FROM receipt_keys") == 1  # the dev tenant's


async def test_seeding_needs_a_transaction(db: asyncpg.Connection) -> None:
    with pytest.raises(RuntimeError, match="transaction"):
        await ensure_receipt_key(db, TENANT_ID, sealer())


async def test_sign_loaded_signs_without_awaiting_once_loaded(
    app: FastAPI, api: httpx.AsyncClient
) -> None:
    signer = signer_of(app)
    signer.forget(TENANT_ID)
    with pytest.raises(LookupError):
        signer.sign_loaded(facts())
    await signer.signing_key(TENANT_ID)
    batch = [signer.sign_loaded(facts()) for _ in range(3)]
    jwks = await public_jwks(api, TENANT_ID)
    assert len({verify_receipt(r, jwks, str(TENANT_ID))["jti"] for r in batch}) == 3


def test_a_key_signs_only_its_own_tenants_receipts() -> None:
    key = SigningKey(OTHER_TENANT, "kid", Ed25519PrivateKey.generate())
    with pytest.raises(ValueError, match="own tenant"):
        sign_receipt(key, facts(TENANT_ID))
    assert "private_key" not in repr(key)


def test_facts_refuse_naive_times_and_no_decisions() -> None:
    with pytest.raises(ValueError, match="timezone"):
        facts(occurred_at=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="at least one"):
        facts(decisions=())


def test_jwk_thumbprint_matches_rfc_8037_example() -> None:
    # RFC 8037, appendix A.3: the thumbprint of the example Ed25519 public key
    assert (
        jwk_thumbprint("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
        == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    )
