"""The API calls, described once: what to send where and how to read the answer.

Each function returns a `Call`; the async and the sync client only send it (`client.py`), so
every operation is written here once and both clients have it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, Literal, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter

from consentry.sdk.models import (
    CaptureResult,
    CheckResult,
    FilteredList,
    MemberPage,
    Preferences,
    RecordedConsent,
    RightsRequest,
    Status,
    SubjectConsents,
    SubjectProof,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
Service = Literal["consent", "preferences"]


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One HTTP call: service, method, path (segments already escaped), body, answer parser.

    `idempotent`: sending it twice has the effect of sending it once, so it may be retried
    after a 503 or a lost connection (a 429 is always retried: the request was not handled).
    """

    service: Service
    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    idempotent: bool
    json: Any = None
    params: Mapping[str, str | int] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


def _segment(value: str) -> str:
    """A path segment, escaped (subject ids may be e-mail addresses, contain '/', ...)."""
    return quote(value, safe="")


def _model(model: type[M]) -> Callable[[httpx.Response], M]:
    return lambda response: model.model_validate_json(response.content)


def _drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class Context(TypedDict, total=False):
    """How a decision was collected, besides the policy version (the proof of consent):
    `method` (api, banner, preference-page, import, gpc; default api), `source` (collection
    point), `occurred_at` (default now), `gpc` (a Global Privacy Control signal: targeting and
    joint-marketing are recorded as withdrawn), `age` (under 13: consent-based purposes are
    refused)."""

    method: str
    source: str
    occurred_at: datetime
    gpc: bool
    age: int


def _context(policy_version: str, context: Context) -> dict[str, Any]:
    body: dict[str, Any] = {"policy_version": policy_version, **context}
    if "occurred_at" in context:
        body["occurred_at"] = context["occurred_at"].isoformat()
    return body


def decide(
    subject_id: str,
    purpose: str,
    status: Status,
    *,
    policy_version: str,
    **context: Unpack[Context],
) -> Call[RecordedConsent]:
    """Record `status` (given or withdrawn) for one purpose; the answer has the receipt.
    Repeating the current decision records nothing new (so it is retried safely)."""
    body = {"status": status, **_context(policy_version, context)}
    path = f"/v1/subjects/{_segment(subject_id)}/consents/{_segment(purpose)}"
    return Call("consent", "PUT", path, _model(RecordedConsent), idempotent=True, json=body)


def give(
    subject_id: str, purpose: str, *, policy_version: str, **context: Unpack[Context]
) -> Call[RecordedConsent]:
    """Give the subject's consent for `purpose` (PUT .../consents/{purpose})."""
    return decide(subject_id, purpose, "given", policy_version=policy_version, **context)


def withdraw(
    subject_id: str, purpose: str, *, policy_version: str, **context: Unpack[Context]
) -> Call[RecordedConsent]:
    """Withdraw the subject's consent for `purpose`."""
    return decide(subject_id, purpose, "withdrawn", policy_version=policy_version, **context)


def capture(
    subject_id: str,
    purposes: Mapping[str, Status],
    *,
    policy_version: str,
    **context: Unpack[Context],
) -> Call[CaptureResult]:
    """Record several decisions of one subject at once (purpose -> given | withdrawn), all or
    none, under one receipt (POST .../consents). Not resent after a lost answer."""
    body = {"purposes": dict(purposes), **_context(policy_version, context)}
    path = f"/v1/subjects/{_segment(subject_id)}/consents"
    return Call("consent", "POST", path, _model(CaptureResult), idempotent=False, json=body)


def consents(subject_id: str) -> Call[SubjectConsents]:
    """The subject's current decisions (404 `subject-not-found` when there are none)."""
    path = f"/v1/subjects/{_segment(subject_id)}/consents"
    return Call("consent", "GET", path, _model(SubjectConsents), idempotent=True)


def proof(subject_id: str) -> Call[SubjectProof]:
    """Proof of consent: every decision ever recorded for the subject, oldest first."""
    path = f"/v1/subjects/{_segment(subject_id)}/proof"
    return Call("consent", "GET", path, _model(SubjectProof), idempotent=True)


def check(subject_id: str, purpose: str) -> Call[CheckResult]:
    """May this subject's data be used for `purpose` now?"""
    path = f"/v1/subjects/{_segment(subject_id)}/checks/{_segment(purpose)}"
    return Call("consent", "GET", path, _model(CheckResult), idempotent=True)


_CHECKS = TypeAdapter(list[CheckResult])


def check_many(pairs: Iterable[tuple[str, str]]) -> Call[list[CheckResult]]:
    """Check up to 10,000 (subject id, purpose) pairs; one result per pair, in order."""
    body = {"checks": [{"subject_id": subject, "purpose": purpose} for subject, purpose in pairs]}
    return Call(
        "consent",
        "POST",
        "/v1/checks",
        lambda response: _CHECKS.validate_python(response.json()["results"]),
        idempotent=True,  # a read
        json=body,
    )


def subject_refs(subject_ids: Iterable[str]) -> Call[list[str]]:
    """The pseudonymous references of subject ids, in order (what intake events carry)."""
    return Call(
        "consent",
        "POST",
        "/v1/subject-refs",
        lambda response: [str(ref) for ref in response.json()["subject_refs"]],
        idempotent=True,  # a pure function of the tenant's key
        json={"subject_ids": list(subject_ids)},
    )


def file_rights_request(
    kind: str,
    *,
    subject_id: str | None = None,
    subject_ids: Iterable[str] | None = None,
    requester: str | None = None,
    note: str | None = None,
) -> Call[RightsRequest]:
    """File a rights request (erasure, access, correction, child-data-erasure) for one subject
    (`requester` defaults to "subject") or, as the tenant, for many (`subject_ids`).
    Not retried after a 503 or a lost connection: a second request would be filed."""
    many = list(subject_ids) if subject_ids is not None else None
    body = _drop_none(
        {
            "kind": kind,
            "requester": requester or ("tenant" if many is not None else "subject"),
            "subject_id": subject_id,
            "subject_ids": many,
            "note": note,
        }
    )
    return Call(
        "consent", "POST", "/v1/rights-requests", _model(RightsRequest), idempotent=False, json=body
    )


def rights_request(request_id: str) -> Call[RightsRequest]:
    """A rights request's state, deadline and progress."""
    path = f"/v1/rights-requests/{_segment(str(request_id))}"
    return Call("consent", "GET", path, _model(RightsRequest), idempotent=True)


def preferences(subject_id: str) -> Call[Preferences]:
    """The subject's preferences over every topic."""
    path = f"/v1/subjects/{_segment(subject_id)}/preferences"
    return Call("preferences", "GET", path, _model(Preferences), idempotent=True)


def change_preferences(subject_id: str, changes: Iterable[Mapping[str, Any]]) -> Call[Preferences]:
    """Join or leave topics, all or none: each change is `{"topic", "subscribed"[, "channel"]}`.
    Joining a marketing topic needs the marketing-email consent (`MarketingConsentRequired`).
    The changes set absolute states, so a repeat changes nothing (retried safely)."""
    path = f"/v1/subjects/{_segment(subject_id)}/preferences"
    body = {"changes": [dict(change) for change in changes]}
    return Call("preferences", "PATCH", path, _model(Preferences), idempotent=True, json=body)


def unsubscribe(
    subject_id: str, topic: str | None = None, channel: str | None = None
) -> Call[Preferences]:
    """Leave one marketing topic, or with no topic every marketing topic (a repeat changes
    nothing)."""
    path = f"/v1/subjects/{_segment(subject_id)}/unsubscribe"
    body = _drop_none({"topic": topic, "channel": channel})
    return Call("preferences", "POST", path, _model(Preferences), idempotent=True, json=body)


def list_members(
    topic: str, *, channel: str = "email", after: str | None = None, limit: int | None = None
) -> Call[MemberPage]:
    """One page of a marketing list's sendable members (`after`: the previous page's `next`)."""
    params: dict[str, str | int] = _drop_none({"channel": channel, "after": after, "limit": limit})
    path = f"/v1/lists/{_segment(topic)}/members"
    return Call("preferences", "GET", path, _model(MemberPage), idempotent=True, params=params)


def filter_list(
    topic: str, subject_refs: Iterable[str], *, channel: str = "email"
) -> Call[FilteredList]:
    """Split a proposed send list (subject refs) into sendable and suppressed."""
    path = f"/v1/lists/{_segment(topic)}/filter"
    body = {"channel": channel, "subject_refs": list(subject_refs)}
    return Call("preferences", "POST", path, _model(FilteredList), idempotent=True, json=body)
