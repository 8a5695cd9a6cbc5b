"""Purpose rules: the default catalogue, and what a tenant may change about a purpose.

Every tenant starts with the default purposes (`seed_default_purposes`, defined once in
migration 0004 as `consentry_seed_default_purposes`): the four cookie categories `required`
(strictly necessary: always on, rests on legitimate interest), `performance`, `functionality`,
`targeting`, and `joint-marketing`, `transfer-outside-eea`, `marketing-email`, all on consent.
A tenant may add purposes and change their title, description, legal basis and whether they
are always on, except that `required` stays always on and an always-on purpose cannot rest on
consent (consent must be withdrawable, GDPR Art. 7(3)).
"""

from __future__ import annotations

from uuid import UUID

import asyncpg

from consentry.consent.db import tenant_transaction
from consentry.consent.purposes import repository
from consentry.consent.purposes.models import REQUIRED, LegalBasis, PurposeIn, PurposeOut
from consentry.consent.tenants.service import TENANT_SEEDERS
from consentry.eventing.db import Connection, Pool
from consentry.httpapi.problems import Problem


async def seed_default_purposes(conn: Connection, tenant_id: UUID) -> None:
    """Give the tenant every default purpose it lacks (idempotent); `conn` is in a transaction
    scoped to `tenant_id` (e.g. the one that creates the tenant)."""
    await repository.seed_defaults(conn, tenant_id=tenant_id)


# Every tenant created or ensured from now on gets the default purposes in its transaction.
if seed_default_purposes not in TENANT_SEEDERS:
    TENANT_SEEDERS.append(seed_default_purposes)


def _out(row: asyncpg.Record) -> PurposeOut:
    return PurposeOut(
        name=row["name"],
        title=row["title"],
        description=row["description"],
        legal_basis=LegalBasis(row["legal_basis"]),
        requires_consent=row["requires_consent"],
        always_on=row["always_on"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def list_purposes(pool: Pool, *, tenant_id: UUID) -> list[PurposeOut]:
    """Every purpose of the tenant, by name."""
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.list_all(conn, tenant_id=tenant_id)
    return [_out(row) for row in rows]


async def get_purpose(pool: Pool, *, tenant_id: UUID, name: str) -> PurposeOut:
    """One purpose; 404 `purpose-not-found` if the tenant has none by that name."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get(conn, tenant_id=tenant_id, name=name)
    if row is None:
        raise Problem(404, "purpose-not-found", "No such purpose", f"no purpose named {name}")
    return _out(row)


def check_purpose(name: str, purpose: PurposeIn) -> None:
    """Raise the Problem for a purpose definition the rules do not allow."""
    if name == REQUIRED and not purpose.always_on:
        raise Problem(
            422,
            "purpose-always-on",
            "The required purpose is always on",
            "`required` (strictly necessary) cannot be withdrawn; always_on must stay true",
        )
    if purpose.always_on and purpose.legal_basis is LegalBasis.CONSENT:
        raise Problem(
            422,
            "always-on-needs-other-basis",
            "An always-on purpose cannot rest on consent",
            "consent must be withdrawable; choose another legal basis or always_on false",
        )


async def put_purpose(
    pool: Pool, *, tenant_id: UUID, name: str, purpose: PurposeIn
) -> tuple[PurposeOut, bool]:
    """Create or update a purpose; return it and whether it was created."""
    check_purpose(name, purpose)
    try:
        async with tenant_transaction(pool, tenant_id) as conn:
            row = await repository.upsert(
                conn,
                tenant_id=tenant_id,
                name=name,
                title=purpose.title,
                description=purpose.description,
                legal_basis=purpose.legal_basis.value,
                always_on=purpose.always_on,
            )
    except asyncpg.ForeignKeyViolationError:
        raise Problem(403, "unknown-tenant", "The API key's tenant does not exist") from None
    return _out(row), bool(row["created"])
