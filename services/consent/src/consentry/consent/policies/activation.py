"""Taking effect: when a version's effective instant has passed, flag the consents it touches.

`activate_due_versions(pool, now=...)` (run by the `policy-scheduler` worker every
`CONSENTRY_POLICY_SCHEDULER_INTERVAL_SECONDS`) activates every version of every tenant whose
effective instant is at least `ACTIVATION_GRACE` (30 s) before `now` and that is not yet
activated, oldest first. The grace lets decisions that were checked against the old version
just before the instant commit first, so that activation sees and flags them. Finding them
across tenants goes through `consentry_due_policy_versions()` (migration 0004), which returns
only (tenant, version) pairs; everything else runs in tenant-scoped transactions.

Activating a version flags, for each *consent-based* purpose in its changed purposes, every
current consent that is given under an earlier version (any version not effective on or after
its effective day): `needs_reconsent = true`, `reconsent_policy_version = <version>`. Purposes
that rest on another legal basis are not flagged: there is no consent to renew (their notice
change still needed the 30 working days of notice). Consents for unchanged purposes, and
withdrawn ones, keep their state. Each flagged consent bumps its subject's version by one and
writes a `consent.reconsent_required` event carrying that version (one version per event, so
a consumer that ignores non-newer versions applies every one of them).

The work goes in chunks of at most `batch_size` subjects per transaction (subjects locked in
subject order, as the consent writer locks them), so a tenant with 100,000 consents never holds
one huge transaction. Each chunk locks the version row first, which serialises schedulers
running at once. A chunk commits its flags, versions and events together, and flagged consents
are not selected again, so a scheduler killed mid-way resumes where it stopped. The last
transaction sets `activated_at` and writes `policy.effective`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from uuid import UUID

from consentry.consent.db import tenant_transaction
from consentry.consent.policies import repository
from consentry.consent.policies.events import effective_event, reconsent_event
from consentry.consent.policies.service import facts_from_row
from consentry.consent.settings import PolicySchedulerSettings
from consentry.eventing import outbox
from consentry.eventing.consumer import TRANSIENT_ERRORS
from consentry.eventing.db import Connection, Pool, create_pool
from consentry.eventing.envelope import Event
from consentry.eventing.logs import get_logger

DEFAULT_BATCH_SIZE = 1000
ACTIVATION_GRACE = timedelta(seconds=30)
log = get_logger(__name__)


async def activate_due_versions(
    pool: Pool,
    *,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    grace: timedelta = ACTIVATION_GRACE,
) -> int:
    """Activate every version effective by `now - grace`; return how many this call activated."""
    due_by = now - grace
    async with pool.acquire() as conn:
        due = await repository.due_versions(conn, due_by=due_by)
    activated = 0
    for row in due:
        try:
            if await activate_version(
                pool,
                tenant_id=row["tenant_id"],
                version=row["version"],
                now=now,
                batch_size=batch_size,
            ):
                activated += 1
        except TRANSIENT_ERRORS as exc:  # one tenant's trouble must not hold up the others
            log.warning(
                "policy activation failed; retried next time",
                tenant=str(row["tenant_id"]),
                version=row["version"],
                error=repr(exc),
            )
    return activated


async def activate_version(
    pool: Pool, *, tenant_id: UUID, version: str, now: datetime, batch_size: int
) -> bool:
    """Flag the version's consents chunk by chunk, then mark it activated; False if it was
    not due or another scheduler finished it first."""
    after = ""
    while True:
        async with tenant_transaction(pool, tenant_id) as conn:
            row = await repository.lock_version(conn, tenant_id=tenant_id, version=version)
            if row is None or row["activated_at"] is not None or row["effective_at"] > now:
                return False
            purposes = await repository.consent_purposes(
                conn, tenant_id=tenant_id, names=list(row["changed_purposes"])
            )
            current = await repository.versions_from(
                conn, tenant_id=tenant_id, effective_on=row["effective_on"]
            )
            subjects: list[str] = []
            if purposes:
                subjects = await repository.next_subjects(
                    conn,
                    tenant_id=tenant_id,
                    purposes=purposes,
                    current_versions=current,
                    version=version,
                    after=after,
                    limit=batch_size,
                )
            if subjects:
                await _flag_chunk(
                    conn,
                    tenant_id=tenant_id,
                    version=version,
                    effective_at=row["effective_at"],
                    purposes=purposes,
                    current_versions=current,
                    subjects=subjects,
                )
                after = subjects[-1]
                continue
            await _finish(conn, tenant_id=tenant_id, version=version, now=now)
            return True


async def _flag_chunk(
    conn: Connection,
    *,
    tenant_id: UUID,
    version: str,
    effective_at: datetime,
    purposes: list[str],
    current_versions: list[str],
    subjects: list[str],
) -> None:
    versions = await repository.lock_subjects(conn, tenant_id=tenant_id, subject_refs=subjects)
    flagged = await repository.flag_consents(
        conn,
        tenant_id=tenant_id,
        purposes=purposes,
        current_versions=current_versions,
        version=version,
        subject_refs=subjects,
    )
    per_subject: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for item in flagged:
        per_subject[item["subject_ref"]].append((item["purpose"], item["policy_version"]))
    events: list[Event] = []
    new_versions: dict[str, int] = {}
    for subject_ref in sorted(per_subject):
        subject_version = versions[subject_ref]
        for purpose, previous in sorted(per_subject[subject_ref]):
            subject_version += 1
            events.append(
                reconsent_event(
                    tenant_id=tenant_id,
                    subject_ref=subject_ref,
                    subject_version=subject_version,
                    purpose=purpose,
                    previous_policy_version=previous,
                    policy_version=version,
                    occurred_at=effective_at,
                )
            )
        new_versions[subject_ref] = subject_version
    await repository.set_subject_versions(conn, tenant_id=tenant_id, versions=new_versions)
    await outbox.add_many(conn, events)


async def _finish(conn: Connection, *, tenant_id: UUID, version: str, now: datetime) -> None:
    rows = await repository.list_versions(conn, tenant_id=tenant_id, version=version)
    facts = facts_from_row(tenant_id, rows[0])
    flagged = await repository.count_flagged(conn, tenant_id=tenant_id, version=version)
    await repository.mark_activated(conn, tenant_id=tenant_id, version=version, at=now)
    await outbox.add(conn, effective_event(facts, activated_at=now, flagged=flagged))
    log.info("policy version activated", tenant=str(tenant_id), version=version, flagged=flagged)


async def run_policy_scheduler(settings: PolicySchedulerSettings, stop: asyncio.Event) -> None:
    """Activate due versions every `policy_scheduler_interval_seconds` until `stop` is set."""
    pool = await create_pool(settings)
    try:
        while not stop.is_set():
            try:
                await activate_due_versions(
                    pool,
                    now=datetime.now(UTC),
                    batch_size=settings.policy_scheduler_batch_size,
                )
            except TRANSIENT_ERRORS as exc:
                log.warning("policy activation failed; retrying", error=repr(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    stop.wait(), timeout=settings.policy_scheduler_interval_seconds
                )
    finally:
        await pool.close()
