"""Policy version rules: publication (with the 30-working-day notice rule) and reading.

Publishing a version, in one tenant-scoped transaction serialised per tenant:

- the version id is new for the tenant (else 409 `policy-version-exists`), every purpose it
  covers is one of the tenant's (else 422 `unknown-purpose`, extension `purposes`);
- versions are published in effective-day order: a version's effective day must be later
  than every published version's (else 422 `policy-version-out-of-order`, extension
  `latest_effective_on`), so that "the version before it" never changes once published and
  neither does its list of changed purposes;
- the first version of a tenant is the baseline: nothing changed, any effective day (a past
  one records the notice already in force);
- a later version must not take effect before its announce day (422
  `policy-effective-in-past`); its changed purposes are the ones added, removed or with a
  different notice text compared with the version before it; if there are any, the effective
  day must be at least the earliest allowed by `workdays.earliest_effective_on` (30 working
  days of notice in the tenant's holiday country, announce and effective day not counted),
  else 422 `policy-notice-too-short` with `earliest_effective_on`;
- it is stored with its effective instant (the start of the effective day in the tenant's time
  zone) and `policy.published` is written to the outbox in the same transaction.

Taking effect (flagging consents for re-consent) is in `activation.py`; the checks the consent
write path calls are in `catalogue.py`.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import asyncpg

from consentry.consent.db import tenant_transaction
from consentry.consent.policies import repository, workdays
from consentry.consent.policies.events import PolicyFacts, published_event
from consentry.consent.policies.models import (
    PolicyPurposeOut,
    PolicyState,
    PolicyVersionIn,
    PolicyVersionList,
    PolicyVersionOut,
    changed_purposes,
    notice_digest,
)
from consentry.eventing import outbox
from consentry.eventing.db import Connection, Pool
from consentry.httpapi.problems import Problem


def effective_instant(effective_on: date, zone: ZoneInfo) -> datetime:
    """The start of `effective_on` in `zone`: when a version takes effect."""
    return datetime.combine(effective_on, time(0), tzinfo=zone)


async def _calendar(conn: Connection, tenant_id: UUID) -> tuple[str, ZoneInfo]:
    row = await repository.tenant_calendar(conn, tenant_id=tenant_id)
    if row is None:
        raise Problem(403, "unknown-tenant", "The API key's tenant does not exist")
    country, zone_name = row["holiday_country"], row["timezone"]
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        zone = None
    if zone is None or not workdays.is_supported_country(country):
        raise Problem(
            409,
            "tenant-calendar-invalid",
            "The tenant's calendar is not usable",
            "the tenant's holiday country or time zone is not recognised; correct the tenant",
            holiday_country=country,
            timezone=zone_name,
        )
    return country, zone


async def publish_version(
    pool: Pool, *, tenant_id: UUID, version: PolicyVersionIn, now: datetime | None = None
) -> PolicyVersionOut:
    """Publish (announce) a version; raise the Problem that refuses it (module doc)."""
    now = now or datetime.now(UTC)
    notices = {p.purpose: notice_digest(p.notice) for p in version.purposes}
    async with tenant_transaction(pool, tenant_id) as conn:
        await repository.lock_tenant_policies(conn, tenant_id=tenant_id)
        country, zone = await _calendar(conn, tenant_id)
        if await repository.version_exists(conn, tenant_id=tenant_id, version=version.version):
            raise Problem(
                409,
                "policy-version-exists",
                "The policy version exists",
                f"policy version {version.version} is already published; versions never change",
                policy_version=version.version,
            )
        known = await repository.known_purposes(conn, tenant_id=tenant_id, names=list(notices))
        unknown = sorted(set(notices) - known)
        if unknown:
            raise Problem(
                422,
                "unknown-purpose",
                "Unknown purpose",
                f"the tenant has no purpose named {', '.join(unknown)}; create it first",
                purposes=unknown,
            )
        announced_on = now.astimezone(zone).date()
        latest = await repository.latest_version(conn, tenant_id=tenant_id)
        previous: str | None = None
        changed: list[str] = []
        if latest is not None:
            previous = latest["version"]
            _check_dates(version.effective_on, announced_on, latest["effective_on"])
            before = await repository.notices(conn, tenant_id=tenant_id, version=latest["version"])
            changed = changed_purposes(before, notices)
            if changed:
                earliest = workdays.earliest_effective_on(announced_on, country)
                if version.effective_on < earliest:
                    raise Problem(
                        422,
                        "policy-notice-too-short",
                        "The change is announced too late",
                        f"a version that changes purposes takes effect at least "
                        f"{workdays.NOTICE_WORKING_DAYS} working days after it is announced; "
                        f"announced on {announced_on.isoformat()}, the earliest effective day "
                        f"is {earliest.isoformat()}",
                        earliest_effective_on=earliest.isoformat(),
                        announced_on=announced_on.isoformat(),
                        changed_purposes=changed,
                        holiday_country=country,
                    )
        facts = PolicyFacts(
            tenant_id=tenant_id,
            version=version.version,
            url=str(version.url),
            published_at=now,
            announced_on=announced_on,
            effective_on=version.effective_on,
            effective_at=effective_instant(version.effective_on, zone),
            notices=notices,
            changed_purposes=changed,
            previous_version=previous,
        )
        await repository.insert_version(
            conn,
            tenant_id=tenant_id,
            version=facts.version,
            url=facts.url,
            published_at=facts.published_at,
            announced_on=facts.announced_on,
            effective_on=facts.effective_on,
            effective_at=facts.effective_at,
            previous_version=previous,
            changed_purposes=changed,
            purposes=[(p.purpose, p.notice, notices[p.purpose]) for p in version.purposes],
        )
        await outbox.add(conn, published_event(facts))
        rows = await repository.list_versions(conn, tenant_id=tenant_id)
    return _find(_outs(rows, now), version.version)


def _check_dates(effective_on: date, announced_on: date, latest_effective_on: date) -> None:
    if effective_on <= latest_effective_on:
        raise Problem(
            422,
            "policy-version-out-of-order",
            "The version must take effect after the latest published version",
            f"the latest published version takes effect on {latest_effective_on.isoformat()}; "
            "a new version must take effect later",
            latest_effective_on=latest_effective_on.isoformat(),
        )
    if effective_on < announced_on:
        raise Problem(
            422,
            "policy-effective-in-past",
            "The effective day lies in the past",
            f"a version announced on {announced_on.isoformat()} cannot take effect before it",
            announced_on=announced_on.isoformat(),
        )


def facts_from_row(tenant_id: UUID, row: asyncpg.Record) -> PolicyFacts:
    """The event facts of a stored version (a `repository.list_versions` row)."""
    return PolicyFacts(
        tenant_id=tenant_id,
        version=row["version"],
        url=row["url"],
        published_at=row["published_at"],
        announced_on=row["announced_on"],
        effective_on=row["effective_on"],
        effective_at=row["effective_at"],
        notices={
            p["purpose"]: bytes.fromhex(p["notice_sha256"]) for p in json.loads(row["purposes"])
        },
        changed_purposes=list(row["changed_purposes"]),
        previous_version=row["previous_version"],
    )


def _outs(rows: list[asyncpg.Record], now: datetime) -> list[PolicyVersionOut]:
    in_force = [row["version"] for row in rows if row["effective_at"] <= now]
    current = in_force[-1] if in_force else None
    outs = []
    for row in rows:
        if row["version"] == current:
            state = PolicyState.EFFECTIVE
        elif row["version"] in in_force:
            state = PolicyState.SUPERSEDED
        else:
            state = PolicyState.ANNOUNCED
        outs.append(
            PolicyVersionOut(
                version=row["version"],
                url=row["url"],
                state=state,
                published_at=row["published_at"],
                announced_on=row["announced_on"],
                effective_on=row["effective_on"],
                effective_at=row["effective_at"],
                activated_at=row["activated_at"],
                previous_version=row["previous_version"],
                changed_purposes=list(row["changed_purposes"]),
                purposes=[PolicyPurposeOut(**p) for p in json.loads(row["purposes"])],
            )
        )
    return outs


def _find(outs: list[PolicyVersionOut], version: str) -> PolicyVersionOut:
    for out in outs:
        if out.version == version:
            return out
    raise Problem(
        404,
        "policy-version-not-found",
        "No such policy version",
        f"the tenant has no policy version {version}",
    )


async def list_versions(
    pool: Pool, *, tenant_id: UUID, now: datetime | None = None
) -> PolicyVersionList:
    """Every version of the tenant by effective day, with its state at `now`."""
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.list_versions(conn, tenant_id=tenant_id)
    return PolicyVersionList(versions=_outs(rows, now or datetime.now(UTC)))


async def get_version(
    pool: Pool, *, tenant_id: UUID, version: str, now: datetime | None = None
) -> PolicyVersionOut:
    """One version; 404 `policy-version-not-found` if the tenant has none by that id."""
    listed = await list_versions(pool, tenant_id=tenant_id, now=now)
    return _find(listed.versions, version)
