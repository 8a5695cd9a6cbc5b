"""Recipient rules: where webhooks may go, the signing secret (made here, shown once,
sealed at rest, rotated with a grace period), deactivation instead of deletion (the
deliveries already made to a recipient stay on record)."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit
from uuid import UUID

import asyncpg

from consentry.eventing.db import Connection, Pool, tenant_transaction
from consentry.eventing.envelope import utcnow
from consentry.eventing.sealing import Sealer
from consentry.httpapi.problems import Problem
from consentry.subprocessors import signing
from consentry.subprocessors.recipients import repository
from consentry.subprocessors.recipients.models import (
    CreatedRecipient,
    Recipient,
    RecipientIn,
    RecipientPatch,
    RotatedSecret,
)


def secret_context(tenant_id: UUID, recipient_id: UUID) -> str:
    """The sealing context (associated data) of a recipient's signing secret."""
    return f"recipient:{tenant_id}:{recipient_id}:webhook-secret"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_target(url: str, *, loopback_http_allowed: bool) -> None:
    """Refuse (422 `webhook-url-not-allowed`) a URL the notifier must not post to.

    https only; plain http only to loopback in development and test (local receivers).
    Outside those, IP literals that are not globally routable and `localhost` are refused
    too: the notifier would otherwise post into our own network on a tenant's behalf.
    (A host name that resolves to such an address is not caught here.)"""
    parts = urlsplit(url)
    host = parts.hostname or ""
    loopback = _is_loopback(host)
    if parts.scheme != "https" and not (loopback and loopback_http_allowed):
        raise Problem(
            422,
            "webhook-url-not-allowed",
            "The webhook URL must be https",
            detail="plain http is accepted only for loopback receivers in development",
            reason="not-https",
        )
    if loopback_http_allowed:
        return
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if loopback or (address is not None and not address.is_global):
        raise Problem(
            422,
            "webhook-url-not-allowed",
            "The webhook URL must reach a public host",
            detail="loopback, private, link-local and reserved addresses are refused",
            reason="not-public",
        )


def _recipient(row: asyncpg.Record) -> Recipient:
    return Recipient.model_validate(dict(row))


def _not_found(recipient_id: UUID) -> Problem:
    return Problem(404, "recipient-not-found", "No such recipient", recipient_id=str(recipient_id))


def _name_taken(name: str) -> Problem:
    return Problem(
        409,
        "recipient-name-taken",
        "An active recipient has this name",
        detail="deactivate it first, or choose another name",
        name=name,
    )


@dataclass(frozen=True)
class RecipientRules:
    """What the API process decides from its settings."""

    sealer: Sealer
    loopback_http_allowed: bool
    rotation_grace: timedelta


async def create(
    pool: Pool, rules: RecipientRules, *, tenant_id: UUID, body: RecipientIn
) -> CreatedRecipient:
    """Register a recipient with a fresh signing secret (returned this once)."""
    check_target(body.webhook_url, loopback_http_allowed=rules.loopback_http_allowed)
    recipient_id = uuid.uuid4()
    secret = signing.new_secret()
    sealed = rules.sealer.seal(secret, context=secret_context(tenant_id, recipient_id))
    try:
        async with tenant_transaction(pool, tenant_id) as conn:
            row = await repository.insert(
                conn,
                tenant_id=tenant_id,
                recipient_id=recipient_id,
                name=body.name,
                role=body.role.value,
                region=body.region,
                webhook_url=body.webhook_url,
                purposes=body.purposes,
                data_categories=body.data_categories,
                secret_sealed=sealed,
            )
    except asyncpg.UniqueViolationError:
        raise _name_taken(body.name) from None
    return CreatedRecipient(
        **_recipient(row).model_dump(exclude={"outside_eea"}),
        signing_secret=signing.format_secret(secret),
    )


async def list_recipients(pool: Pool, *, tenant_id: UUID, active: bool | None) -> list[Recipient]:
    """The tenant's recipients."""
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.list_recipients(conn, tenant_id=tenant_id, active=active)
    return [_recipient(row) for row in rows]


async def get(pool: Pool, *, tenant_id: UUID, recipient_id: UUID) -> Recipient:
    """One recipient; 404 when the tenant has none with this id."""
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.get(conn, tenant_id=tenant_id, recipient_id=recipient_id)
    if row is None:
        raise _not_found(recipient_id)
    return _recipient(row)


async def change(
    pool: Pool,
    rules: RecipientRules,
    *,
    tenant_id: UUID,
    recipient_id: UUID,
    patch: RecipientPatch,
) -> Recipient:
    """Change the given fields (404 unknown, 409 name taken by another active recipient)."""
    if patch.webhook_url is not None:
        check_target(patch.webhook_url, loopback_http_allowed=rules.loopback_http_allowed)
    try:
        async with tenant_transaction(pool, tenant_id) as conn:
            row = await repository.update(
                conn,
                tenant_id=tenant_id,
                recipient_id=recipient_id,
                name=patch.name,
                role=None if patch.role is None else patch.role.value,
                region=patch.region,
                webhook_url=patch.webhook_url,
                purposes=patch.purposes,
                data_categories=patch.data_categories,
                active=patch.active,
            )
    except asyncpg.UniqueViolationError:
        raise _name_taken(patch.name or "") from None
    if row is None:
        raise _not_found(recipient_id)
    return _recipient(row)


async def deactivate(
    pool: Pool, rules: RecipientRules, *, tenant_id: UUID, recipient_id: UUID
) -> Recipient:
    """Stop selecting the recipient for new notices; deliveries under way continue (it
    holds the data those notices are about)."""
    return await change(
        pool,
        rules,
        tenant_id=tenant_id,
        recipient_id=recipient_id,
        patch=RecipientPatch(active=False),
    )


async def rotate_secret(
    pool: Pool, rules: RecipientRules, *, tenant_id: UUID, recipient_id: UUID
) -> RotatedSecret:
    """Give the recipient a new secret; the old one signs and verifies until the grace
    period ends (the recipient switches over without losing a notice)."""
    secret = signing.new_secret()
    sealed = rules.sealer.seal(secret, context=secret_context(tenant_id, recipient_id))
    grace_ends = utcnow() + rules.rotation_grace if rules.rotation_grace else None
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await repository.rotate(
            conn,
            tenant_id=tenant_id,
            recipient_id=recipient_id,
            secret_sealed=sealed,
            previous_expires_at=grace_ends,
        )
    if row is None:
        raise _not_found(recipient_id)
    return RotatedSecret(
        recipient_id=recipient_id,
        signing_secret=signing.format_secret(secret),
        previous_secret_valid_until=grace_ends,
    )


async def signing_secrets(
    conn: Connection, sealer: Sealer, *, tenant_id: UUID, recipient_id: UUID, now: datetime
) -> list[bytes]:
    """The recipient's secrets that sign and verify now: the current one first, then the
    previous one while its grace period lasts. Empty for an unknown recipient."""
    row = await repository.sealed_secrets(conn, tenant_id=tenant_id, recipient_id=recipient_id)
    if row is None:
        return []
    return open_secrets(
        sealer,
        tenant_id=tenant_id,
        recipient_id=recipient_id,
        current=row["secret_sealed"],
        previous=row["previous_secret_sealed"],
        previous_expires_at=row["previous_secret_expires_at"],
        now=now,
    )


def open_secrets(
    sealer: Sealer,
    *,
    tenant_id: UUID,
    recipient_id: UUID,
    current: bytes,
    previous: bytes | None,
    previous_expires_at: datetime | None,
    now: datetime,
) -> list[bytes]:
    """Open the sealed secret(s) valid at `now` (see `signing_secrets`)."""
    context = secret_context(tenant_id, recipient_id)
    opened = [sealer.open(current, context=context)]
    if previous is not None and previous_expires_at is not None and previous_expires_at > now:
        opened.append(sealer.open(previous, context=context))
    return opened
