"""Recording captures: the rules applied to a group of captures inside one transaction.

A *capture* is one caller's request: one subject, one or more purposes, the proof (policy
version, method, source, time, GPC, client fingerprint) and the receipt id. It succeeds or
fails as a whole and alone. `apply_captures` runs in the caller's open transaction, scoped to
one tenant: the HTTP API's group-commit writer (`writer.py`) passes many concurrent captures
of a tenant in one transaction; the intake worker passes one per record. Everything that can
be refused without the database is refused earlier (`service.prepare_capture`); what needs
the database (a subject already flagged as a child) is refused here, per capture.

Per purpose, a decision equal to the current one (same status and policy version, no
re-consent pending) is not recorded again: it changes nothing and publishes nothing.

Traces: a capture keeps the trace current where it is built (the HTTP request's, or the
intake event's), and its decisions' events carry that trace. The events are built later, in
the group-commit writer's task, where the current trace is whatever that task has (none),
so it is the capture that carries it there, not the context.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

import asyncpg

from consentry.consent.consents import repository
from consentry.consent.consents.events import decision_event
from consentry.consent.consents.models import (
    CHILD_AGE,
    ConsentMethod,
    ConsentState,
    ConsentStatus,
    RecordedDecision,
)
from consentry.eventing import outbox, tracing
from consentry.eventing.db import Connection
from consentry.httpapi.problems import Problem


@dataclass(frozen=True, slots=True)
class Decision:
    """One purpose of a capture, validated against the tenant's purposes and policy."""

    purpose: str
    status: ConsentStatus
    requires_consent: bool
    method: ConsentMethod | None = None  # overrides the capture's (GPC withdrawals: `gpc`)


@dataclass(frozen=True, slots=True)
class Capture:
    """One validated capture request (the unit that succeeds or fails alone)."""

    tenant_id: UUID
    subject_ref: str
    decisions: tuple[Decision, ...]
    policy_version: str
    method: ConsentMethod
    source: str | None
    occurred_at: datetime
    gpc: bool = False
    child: bool = False  # the capture carried an age signal under CHILD_AGE
    client_fingerprint: str | None = None
    receipt_id: UUID = field(default_factory=uuid.uuid4)
    # The trace current where the capture is built (its request's or intake event's).
    trace: tracing.TraceHeaders | None = field(default_factory=tracing.current)


@dataclass(frozen=True, slots=True)
class CaptureOutcome:
    """What a capture left: the state of each of its purposes and what it recorded."""

    capture: Capture
    subject_version: int
    states: tuple[ConsentState, ...]
    recorded: tuple[RecordedDecision, ...]
    recorded_at: datetime


def child_refusal() -> Problem:
    """The answer to a consent capture for a child."""
    return Problem(
        422,
        "child-consent-not-allowed",
        "Consent cannot be collected from a child",
        f"The subject is under {CHILD_AGE}: consent-based purposes cannot be given. "
        "Withdrawals and purposes that rest on another legal basis are accepted.",
        minimum_age=CHILD_AGE,
    )


def state_from_row(row: asyncpg.Record) -> ConsentState:
    """A current-state row as the API shows it."""
    return ConsentState(
        purpose=row["purpose"],
        status=ConsentStatus(row["status"]),
        policy_version=row["policy_version"],
        method=ConsentMethod(row["method"]),
        source=row["source"],
        occurred_at=row["occurred_at"],
        subject_version=row["subject_version"],
        updated_at=row["updated_at"],
        needs_reconsent=row["needs_reconsent"],
    )


def _gives_consent(capture: Capture) -> bool:
    return any(d.requires_consent and d.status is ConsentStatus.GIVEN for d in capture.decisions)


async def apply_captures(
    conn: Connection, tenant_id: UUID, captures: Sequence[Capture]
) -> list[CaptureOutcome | Problem]:
    """Record `captures` (all of `tenant_id`, in order) in the open, tenant-scoped transaction.

    Returns, per capture, its outcome or the Problem that refused it (nothing of a refused
    capture is written, except the child flag of a subject whose capture signalled a child).
    """
    refs = sorted({c.subject_ref for c in captures})
    locked = await repository.lock_subjects(conn, tenant_id=tenant_id, subject_refs=refs)
    now: datetime = locked[0]["now"]
    versions = {row["subject_ref"]: row["version"] for row in locked}
    children = {row["subject_ref"] for row in locked if row["is_child"]}
    current: dict[tuple[str, str], ConsentState] = {
        (row["subject_ref"], row["purpose"]): state_from_row(row)
        for row in await repository.current_of_subjects(
            conn, tenant_id=tenant_id, subject_refs=refs
        )
    }
    start_versions = dict(versions)
    results: list[CaptureOutcome | Problem] = []
    recorded_all: list[RecordedDecision] = []
    traces: list[tracing.TraceHeaders | None] = []  # the capture's trace, per recorded_all
    last_position: dict[tuple[str, str], int] = {}
    for capture in captures:
        ref = capture.subject_ref
        if capture.child and ref not in children:
            await repository.flag_child(conn, tenant_id=tenant_id, subject_ref=ref)
            children.add(ref)
        if ref in children and _gives_consent(capture):
            results.append(child_refusal())
            continue
        states: list[ConsentState] = []
        recorded: list[RecordedDecision] = []
        for decision in capture.decisions:
            key = (ref, decision.purpose)
            existing = current.get(key)
            if (
                existing is not None
                and existing.status is decision.status
                and existing.policy_version == capture.policy_version
                and not existing.needs_reconsent
            ):
                states.append(existing)
                continue
            method = decision.method or capture.method
            versions[ref] += 1
            entry = RecordedDecision(
                event_id=uuid.uuid4(),
                tenant_id=tenant_id,
                subject_ref=ref,
                subject_version=versions[ref],
                purpose=decision.purpose,
                status=decision.status,
                policy_version=capture.policy_version,
                method=method,
                source=capture.source,
                occurred_at=capture.occurred_at,
                receipt_id=capture.receipt_id,
                client_fingerprint=capture.client_fingerprint,
                gpc=capture.gpc,
            )
            state = entry.state(updated_at=now)
            current[key] = state
            recorded_all.append(entry)
            traces.append(capture.trace)
            last_position[key] = len(recorded_all)  # 1-based, as SQL arrays
            recorded.append(entry)
            states.append(state)
        results.append(CaptureOutcome(capture, versions[ref], tuple(states), tuple(recorded), now))
    if recorded_all:
        changed = {ref: v for ref, v in versions.items() if v != start_versions[ref]}
        await repository.write_group(
            conn,
            tenant_id=tenant_id,
            decisions=recorded_all,
            last_per_purpose=sorted(last_position.values()),
            subject_versions=changed,
            events=outbox.columns(
                decision_event(entry, trace)
                for entry, trace in zip(recorded_all, traces, strict=True)
            ),
        )
    return results
