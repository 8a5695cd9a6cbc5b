"""Rights-request rules: filing, identity verification, extension, rejection, completion and
reading (docs/rights-requests.md).

Every change runs in one tenant-scoped transaction that locks the request row, rebuilds its
deadline from the stored facts (`Deadline.restore`, which re-checks every rule), applies the
change through the deadline engine, and stores the new facts with the derived `due_at`.
Errors of the engine become problem documents (`deadline_problem`). Events go through the
outbox in the same transaction; the `rights` worker is woken by a NOTIFY at commit.

- A **subject's** request starts `received` with the clock paused while the identity is
  verified (Art. 12(6)); `verify_identity` resumes it and moves it to `in-progress`, or
  rejects it with a reason.
- A **tenant's** request is identity-verified implicitly (the tenant is authenticated) and
  `in-progress` at once; it may name up to 100,000 subjects, stored in one statement and
  fanned out in the background (`fanout.py`).
- Erasure and access requests complete when every subject has every expected answer
  (`tracker.py`: each service's ErasureCompleted, or its sealed AccessPartReady); a
  correction request is completed by the tenant (`complete_manually`), which may also close
  an access request it answered otherwise.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from consentry.consent.db import tenant_transaction
from consentry.consent.policies import repository as policies_repository
from consentry.consent.receipts.models import SigningKey
from consentry.consent.receipts.service import ReceiptSigner
from consentry.consent.rights import events, repository
from consentry.consent.rights.certificate import (
    CertificateFacts,
    RecipientReport,
    ServiceReport,
    sign_certificate,
)
from consentry.consent.rights.deadlines import (
    AlreadyExtendedError,
    ClosedError,
    Deadline,
    DeadlineError,
    EventOrderError,
    ExtendedWhilePausedError,
    ExtensionError,
    ExtensionTooLateError,
    InvalidCalendarError,
    PauseError,
)
from consentry.consent.rights.models import (
    DeadlineFilter,
    DeadlineOut,
    ExtensionIn,
    ExtensionOut,
    IdentityIn,
    PauseOut,
    ProgressOut,
    RecipientProgress,
    RejectionIn,
    Requester,
    RequestKind,
    RequestState,
    RightsRequestIn,
    RightsRequestList,
    RightsRequestOut,
    RightsRequestSummary,
    ServiceProgress,
)
from consentry.consent.sealing import Sealer
from consentry.eventing import outbox
from consentry.eventing.db import Connection, Pool
from consentry.eventing.envelope import Event
from consentry.httpapi.problems import Problem

FUTURE_TOLERANCE = timedelta(minutes=5)  # clock skew allowed on a notice's time
DEFAULT_PAGE = 100


@dataclass(frozen=True, slots=True)
class ErasurePolicy:
    """What an erasure request waits for, fixed when it is received."""

    services: tuple[str, ...] = ("consent", "preferences")
    await_recipients: bool = True


def note_context(tenant_id: UUID, request_id: UUID) -> str:
    """What a request's sealed note is bound to."""
    return f"tenant:{tenant_id}:rights-request:{request_id}:note"


def export_key_context(tenant_id: UUID, request_id: UUID) -> str:
    """What an access request's sealed X25519 private key is bound to."""
    return f"tenant:{tenant_id}:rights-request:{request_id}:export-key"


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


# --- Problems


def not_found() -> Problem:
    """404 for a request the caller's tenant does not have (another tenant's included)."""
    return Problem(404, "rights-request-not-found", "No such rights request")


def _closed() -> Problem:
    return Problem(
        409,
        "rights-request-closed",
        "The request is closed",
        "the request is completed or rejected; it no longer changes",
    )


def _state_conflict(state: str, detail: str) -> Problem:
    return Problem(
        409,
        "rights-request-state-conflict",
        "Not possible in the request's state",
        detail,
        state=state,
    )


def deadline_problem(error: DeadlineError, deadline: Deadline | None = None) -> Problem:
    """The problem document for an error of the deadline engine."""
    if isinstance(error, ClosedError):
        return _closed()
    if isinstance(error, AlreadyExtendedError):
        return Problem(
            422,
            "extension-already-used",
            "The deadline was extended already",
            "GDPR Art. 12(3) allows one extension only",
        )
    if isinstance(error, ExtensionTooLateError):
        limit = None if deadline is None else deadline.original_due_at.isoformat()
        return Problem(
            422,
            "extension-too-late",
            "The first month has ended",
            "the extension and the notice to the requester must come before the end of the "
            "first month",
            original_due_at=limit,
        )
    if isinstance(error, ExtendedWhilePausedError):
        return Problem(
            422,
            "extension-while-paused",
            "The clock is paused",
            "the request awaits identity verification; the first month's end is not known yet",
        )
    if isinstance(error, ExtensionError):
        return Problem(422, "extension-invalid", "The extension is not valid", str(error))
    if isinstance(error, PauseError):
        return Problem(422, "rights-request-pause-refused", "The clock cannot change", str(error))
    if isinstance(error, EventOrderError):
        return Problem(
            422,
            "rights-request-dates-out-of-order",
            "A date is out of order",
            "a date lies before a fact already recorded (e.g. a notice before receipt)",
        )
    if isinstance(error, InvalidCalendarError):
        return Problem(
            409,
            "tenant-calendar-invalid",
            "The tenant's calendar is not usable",
            "the tenant's holiday country or time zone is not recognised; correct the tenant",
        )
    return Problem(422, "validation-error", "The request is not valid", str(error))


# --- Filing


def _export_key_pair(sealer: Sealer, tenant_id: UUID, request_id: UUID) -> tuple[bytes, bytes]:
    """A fresh X25519 pair: the public key (raw) and the private key sealed."""
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return public, sealer.seal(raw, context=export_key_context(tenant_id, request_id))


async def create_request(
    pool: Pool,
    *,
    tenant_id: UUID,
    body: RightsRequestIn,
    subject_refs: list[str],
    sealer: Sealer,
    erasure: ErasurePolicy,
    wake: Callable[[], None],
    now: datetime | None = None,
) -> RightsRequestOut:
    """File a request for `subject_refs` (pseudonymous, in order; repeats count once); once it
    is committed in progress, `wake` the `rights` worker (`waker.WorkerWaker.wake`)."""
    now = _now(now)
    refs = list(dict.fromkeys(subject_refs))
    request_id = uuid.uuid4()
    async with tenant_transaction(pool, tenant_id) as conn:
        calendar = await policies_repository.tenant_calendar(conn, tenant_id=tenant_id)
        if calendar is None:
            raise Problem(403, "unknown-tenant", "The API key's tenant does not exist")
        try:
            deadline = Deadline.start(now, calendar["timezone"], calendar["holiday_country"])
        except DeadlineError as exc:
            raise deadline_problem(exc) from None
        verified_at: datetime | None = now
        if body.requester is Requester.SUBJECT:
            # Art. 12(6): the clock stops until the subject's identity is confirmed.
            deadline = deadline.pause(now)
            state, verified_at = RequestState.RECEIVED, None
        else:
            state = RequestState.IN_PROGRESS
        note_sealed = None
        if body.note:
            note_sealed = sealer.seal(
                body.note.encode(), context=note_context(tenant_id, request_id)
            )
        public_key = sealed_key = None
        if body.kind is RequestKind.ACCESS:
            public_key, sealed_key = _export_key_pair(sealer, tenant_id, request_id)
        row = await repository.insert_request(
            conn,
            tenant_id=tenant_id,
            request_id=request_id,
            kind=body.kind.value,
            requester=body.requester.value,
            state=state.value,
            subject_refs=refs,
            note_sealed=note_sealed,
            expected_services=erasure.services,
            # Recipients are told about erasures only (subprocessors service).
            await_recipients=erasure.await_recipients and body.kind.erases,
            deadline=deadline,
            verified_at=verified_at,
            started_at=verified_at,
            export_public_key=public_key,
            export_key_sealed=sealed_key,
        )
    if state is RequestState.IN_PROGRESS:
        wake()
    # Nothing has answered a request this new: the answer needs no read of its bookkeeping.
    return _out(row, [], [], refs[0] if len(refs) == 1 else None, body.note or None, now)


# --- Changes


async def _locked(conn: Connection, tenant_id: UUID, request_id: UUID) -> asyncpg.Record:
    row = await repository.get_request(conn, tenant_id=tenant_id, request_id=request_id, lock=True)
    if row is None:
        raise not_found()
    if RequestState(row["state"]).closed:
        raise _closed()
    return row


async def verify_identity(
    pool: Pool,
    *,
    tenant_id: UUID,
    request_id: UUID,
    body: IdentityIn,
    sealer: Sealer,
    wake: Callable[[], None],
    now: datetime | None = None,
) -> RightsRequestOut:
    """Record the identity verification of a subject's request: the clock resumes; the
    request goes in progress (and, committed, `wake` the `rights` worker), or is rejected
    with the reason."""
    now = _now(now)
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _locked(conn, tenant_id, request_id)
        if row["state"] != RequestState.RECEIVED:
            raise _state_conflict(
                row["state"], "only a subject's request awaiting verification can be verified"
            )
        deadline = repository.deadline_of(row)
        try:
            deadline = deadline.resume(now)
            if body.verified:
                await repository.save(
                    conn,
                    tenant_id=tenant_id,
                    request_id=request_id,
                    state=RequestState.IN_PROGRESS,
                    deadline=deadline,
                    verified_at=now,
                    started_at=now,
                )
            else:
                assert body.reason is not None  # the model requires it
                await _reject(conn, tenant_id, row, deadline.close(now), body.reason, now)
        except DeadlineError as exc:
            raise deadline_problem(exc, deadline) from None
        read = await _read(conn, tenant_id, request_id, sealer, now)
    if body.verified:
        wake()  # committed: the worker can fan it out
    return read


async def extend(
    pool: Pool,
    *,
    tenant_id: UUID,
    request_id: UUID,
    body: ExtensionIn,
    sealer: Sealer,
    now: datetime | None = None,
) -> RightsRequestOut:
    """Extend the deadline once by 1 or 2 months (before the first month ends)."""
    now = _now(now)
    if body.notice_sent_at > now + FUTURE_TOLERANCE:
        raise Problem(
            422,
            "occurred-in-future",
            "The notice lies in the future",
            "notice_sent_at must not be later than now",
        )
    notice_sent_at = min(body.notice_sent_at, now)  # tolerated skew: not after the decision
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _locked(conn, tenant_id, request_id)
        deadline = repository.deadline_of(row)
        try:
            extended = deadline.extend(body.months, body.reason, notice_sent_at, now)
        except DeadlineError as exc:
            raise deadline_problem(exc, deadline) from None
        await repository.save(
            conn, tenant_id=tenant_id, request_id=request_id, state=row["state"], deadline=extended
        )
        return await _read(conn, tenant_id, request_id, sealer, now)


async def reject(
    pool: Pool,
    *,
    tenant_id: UUID,
    request_id: UUID,
    body: RejectionIn,
    sealer: Sealer,
    now: datetime | None = None,
) -> RightsRequestOut:
    """Reject the request with a reason; an erasure whose fan-out began cannot be."""
    now = _now(now)
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _locked(conn, tenant_id, request_id)
        if RequestKind(row["kind"]).erases and row["fanned_out"] > 0:
            raise _state_conflict(
                row["state"], "the erasure has begun; what was erased cannot be restored"
            )
        deadline = repository.deadline_of(row)
        try:
            if deadline.is_paused:
                deadline = deadline.resume(now)
            await _reject(conn, tenant_id, row, deadline.close(now), body.reason, now)
        except DeadlineError as exc:
            raise deadline_problem(exc, deadline) from None
        return await _read(conn, tenant_id, request_id, sealer, now)


async def _reject(
    conn: Connection,
    tenant_id: UUID,
    row: asyncpg.Record,
    closed: Deadline,
    reason: str,
    now: datetime,
) -> None:
    await repository.save(
        conn,
        tenant_id=tenant_id,
        request_id=row["id"],
        state=RequestState.REJECTED,
        deadline=closed,
        reason=reason,
    )
    await outbox.add(
        conn,
        events.request_closed(
            tenant_id=tenant_id,
            request_id=row["id"],
            kind=RequestKind(row["kind"]),
            completed=False,
            closed_at=now,
            reason=reason,
        ),
    )


async def complete_manually(
    pool: Pool,
    *,
    tenant_id: UUID,
    request_id: UUID,
    signer: ReceiptSigner,
    sealer: Sealer,
    now: datetime | None = None,
) -> RightsRequestOut:
    """The tenant answered a correction or access request: complete it, with a certificate.
    Erasure requests complete by themselves when every answer is in (`tracker.py`)."""
    now = _now(now)
    key = await signer.signing_key(tenant_id)  # before taking a connection (see ReceiptSigner)
    async with tenant_transaction(pool, tenant_id) as conn:
        row = await _locked(conn, tenant_id, request_id)
        if RequestKind(row["kind"]).erases:
            raise _state_conflict(
                row["state"],
                "an erasure completes when every service and recipient has answered",
            )
        if row["state"] != RequestState.IN_PROGRESS:
            raise _state_conflict(row["state"], "only a request in progress can be completed")
        try:
            await complete(conn, tenant_id=tenant_id, row=row, key=key, now=now)
        except DeadlineError as exc:
            raise deadline_problem(exc) from None
        return await _read(conn, tenant_id, request_id, sealer, now)


def _last_fact(deadline: Deadline) -> datetime:
    facts = [deadline.received_at]
    for pause in deadline.pauses:
        facts += [pause.paused_at] if pause.resumed_at is None else [pause.resumed_at]
    if deadline.extension is not None:
        facts.append(deadline.extension.extended_at)
    return max(facts)


async def complete(
    conn: Connection, *, tenant_id: UUID, row: asyncpg.Record, key: SigningKey, now: datetime
) -> str:
    """Complete the (locked, in-progress) request `row` in `conn`'s transaction: close its
    deadline, sign its certificate, store both and queue `RequestClosed`. Returns the
    certificate."""
    (certificate,) = await complete_many(conn, tenant_id=tenant_id, rows=[row], key=key, now=now)
    return certificate


async def complete_many(
    conn: Connection,
    *,
    tenant_id: UUID,
    rows: Sequence[asyncpg.Record],
    key: SigningKey,
    now: datetime,
) -> list[str]:
    """`complete` for several requests of the tenant at once, in a few statements whatever
    their number; the certificates, in the order of `rows`."""
    if not rows:
        return []
    reports = await repository.reports_of(
        conn, tenant_id=tenant_id, request_ids=[row["id"] for row in rows]
    )
    closed: list[tuple[UUID, Deadline, str]] = []
    closing: list[Event] = []
    for row in rows:
        request_id: UUID = row["id"]
        deadline = repository.deadline_of(row)
        # Another process's clock may be a little behind the last recorded fact.
        closed_at = max(now, _last_fact(deadline))
        done = deadline.close(closed_at)
        report = reports[request_id]
        facts = CertificateFacts(
            tenant_id=tenant_id,
            request_id=request_id,
            kind=row["kind"],
            requester=row["requester"],
            received_at=row["received_at"],
            completed_at=closed_at,
            due_at=done.due_at,
            subject_count=row["subject_count"],
            subjects_sha256=report.subjects_sha256,
            subject_ref=report.first_subject if row["subject_count"] == 1 else None,
            services=[ServiceReport(**service) for service in report.services],
            recipients=[RecipientReport(**recipient) for recipient in report.recipients],
        )
        certificate = sign_certificate(key, facts)
        closed.append((request_id, done, certificate))
        closing.append(
            events.request_closed(
                tenant_id=tenant_id,
                request_id=request_id,
                kind=RequestKind(row["kind"]),
                completed=True,
                closed_at=closed_at,
                certificate=certificate,
            )
        )
    await repository.close_many(conn, tenant_id=tenant_id, closed=closed)
    await outbox.add_many(conn, closing)
    return [certificate for _, _, certificate in closed]


# --- Reading


async def get_request(
    pool: Pool, *, tenant_id: UUID, request_id: UUID, sealer: Sealer, now: datetime | None = None
) -> RightsRequestOut:
    """The request with its deadline, progress and certificate; 404 when the tenant has none."""
    async with tenant_transaction(pool, tenant_id) as conn:
        return await _read(conn, tenant_id, request_id, sealer, _now(now))


async def _read(
    conn: Connection, tenant_id: UUID, request_id: UUID, sealer: Sealer, now: datetime
) -> RightsRequestOut:
    row = await repository.get_request(conn, tenant_id=tenant_id, request_id=request_id)
    if row is None:
        raise not_found()
    services = await repository.services(conn, tenant_id=tenant_id, request_id=request_id)
    recipients = await repository.recipients(conn, tenant_id=tenant_id, request_id=request_id)
    subject_ref = None
    if row["subject_count"] == 1:
        subject_ref = await repository.first_subject(
            conn, tenant_id=tenant_id, request_id=request_id
        )
    note = None
    if row["note_sealed"] is not None:
        note = sealer.open(row["note_sealed"], context=note_context(tenant_id, request_id)).decode()
    return _out(row, services, recipients, subject_ref, note, now)


def _out(
    row: asyncpg.Record,
    services: Sequence[repository.Report],
    recipients: Sequence[repository.Report],
    subject_ref: str | None,
    note: str | None,
    now: datetime,
) -> RightsRequestOut:
    """The request as the API shows it: its row, its per-service and per-recipient totals,
    its one subject (of a single-subject request) and its note in clear."""
    deadline = repository.deadline_of(row)
    extension = deadline.extension
    return RightsRequestOut(
        id=row["id"],
        kind=RequestKind(row["kind"]),
        requester=Requester(row["requester"]),
        state=RequestState(row["state"]),
        subject_count=row["subject_count"],
        subject_ref=subject_ref,
        note=note,
        reason=row["reason"],
        received_at=row["received_at"],
        verified_at=row["verified_at"],
        started_at=row["started_at"],
        closed_at=row["closed_at"],
        deadline=DeadlineOut(
            due_at=deadline.due_at,
            status=deadline.status(now),
            days_left=deadline.days_left(now),
            original_due_at=deadline.original_due_at,
            timezone=deadline.timezone,
            holiday_country=deadline.holiday_country,
            pauses=[
                PauseOut(paused_at=p.paused_at, resumed_at=p.resumed_at) for p in deadline.pauses
            ],
            extension=None
            if extension is None
            else ExtensionOut(
                months=extension.months,
                reason=extension.reason,
                notice_sent_at=extension.notice_sent_at,
                extended_at=extension.extended_at,
            ),
        ),
        progress=ProgressOut(
            subjects=row["subject_count"],
            fanned_out=row["fanned_out"],
            done=row["subjects_done"],
            recipients_selected=row["subjects_with_recipients"],
            expected_services=list(row["expected_services"]),
            await_recipients=row["await_recipients"],
            services=[
                ServiceProgress(
                    service=s["service"],
                    subjects=s["subjects"],
                    erased=sorted(s["erased"]),
                    last_completed_at=s["last_completed_at"],
                )
                for s in services
            ],
            recipients=[RecipientProgress(**r) for r in recipients],
        ),
        certificate=row["certificate"],
    )


def _encode_cursor(due_at: datetime, request_id: UUID) -> str:
    raw = f"{due_at.isoformat()}|{request_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        due, _, request_id = raw.partition("|")
        due_at = datetime.fromisoformat(due)
        if due_at.tzinfo is None:
            raise ValueError("naive")
        return due_at, UUID(request_id)
    except (ValueError, binascii.Error):
        raise Problem(
            422,
            "validation-error",
            "The request is not valid",
            "cursor is not one this API returned",
            errors=[{"location": ["query", "cursor"], "message": "not a valid cursor"}],
        ) from None


async def list_requests(
    pool: Pool,
    *,
    tenant_id: UUID,
    deadline: DeadlineFilter,
    state: RequestState | None,
    limit: int = DEFAULT_PAGE,
    cursor: str | None = None,
    soon_days: int = 5,
    now: datetime | None = None,
) -> RightsRequestList:
    """A page of the tenant's requests by due instant, filtered by deadline and state."""
    now = _now(now)
    after = None if cursor is None else _decode_cursor(cursor)
    async with tenant_transaction(pool, tenant_id) as conn:
        rows = await repository.list_requests(
            conn,
            tenant_id=tenant_id,
            state=None if state is None else state.value,
            deadline=deadline.value,
            now=now,
            limit=limit + 1,
            soon_days=soon_days,
            after=after,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    summaries = []
    for row in rows:
        facts = repository.deadline_of(row)
        summaries.append(
            RightsRequestSummary(
                id=row["id"],
                kind=RequestKind(row["kind"]),
                requester=Requester(row["requester"]),
                state=RequestState(row["state"]),
                subject_count=row["subject_count"],
                received_at=row["received_at"],
                due_at=row["due_at"],
                deadline_status=facts.status(now, soon_days),
                days_left=facts.days_left(now),
            )
        )
    next_cursor = _encode_cursor(rows[-1]["due_at"], rows[-1]["id"]) if more and rows else None
    return RightsRequestList(requests=summaries, next_cursor=next_cursor)
