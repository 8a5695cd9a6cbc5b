"""RFC 9457 problem documents raised as typed exceptions.

Every error answer of a consentry API is `application/problem+json` with a `type` URN
`urn:consentry:problem:<slug>` (catalogue: docs/problems.md). `raise_for_problem` turns one
into a `ConsentryError`: the class is chosen by slug when the slug has one of its own (e.g.
`SubjectNotFound`), else by HTTP status (`NotFound`, `Conflict`, ...); catch by either.
"""

# ruff: noqa: N818 - the classes are named after the problems (NotFound, Conflict, ...)

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

TYPE_PREFIX = "urn:consentry:problem:"
_STANDARD = frozenset({"type", "title", "status", "detail", "instance"})


class ConsentryError(Exception):
    """An error answer of a consentry API (or no answer at all: `status` 0)."""

    def __init__(
        self,
        status: int,
        type: str,  # RFC 9457's member name
        title: str,
        detail: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {title}" + (f": {detail}" if detail else ""))
        self.status = status
        self.type = type
        self.title = title
        self.detail = detail
        self.extensions: dict[str, Any] = dict(extensions or {})
        self.retry_after = retry_after

    @property
    def slug(self) -> str:
        """The problem's slug: `type` without `urn:consentry:problem:`."""
        return self.type.removeprefix(TYPE_PREFIX)


class Unauthenticated(ConsentryError):
    """401: no API key, or one the API does not know."""


class Forbidden(ConsentryError):
    """403: the key lacks the scope the call needs."""


class NotFound(ConsentryError):
    """404: no such resource (also another tenant's)."""


class Conflict(ConsentryError):
    """409: the resource is not in a state that allows the call."""


class ValidationFailed(ConsentryError):
    """422: the request was refused; `extensions["errors"]` lists what was wrong."""


class RateLimited(ConsentryError):
    """429: the key made too many requests; `retry_after` says for how long to wait."""


class Unavailable(ConsentryError):
    """503: the service cannot answer now (try again after `retry_after`)."""


class SubjectNotFound(NotFound):
    """`subject-not-found`: no consent is recorded for this subject."""


class RightsRequestNotFound(NotFound):
    """`rights-request-not-found`."""


class PolicyVersionExists(Conflict):
    """`policy-version-exists`: that policy version was published before."""


class MarketingConsentRequired(Conflict):
    """`marketing-consent-required`: joining a marketing topic needs the consent first."""


class TenantNotProvisioned(Unavailable):
    """`tenant-not-provisioned`: the tenant has not reached this service yet (retried)."""


_BY_STATUS: dict[int, type[ConsentryError]] = {
    401: Unauthenticated,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    422: ValidationFailed,
    429: RateLimited,
    503: Unavailable,
}
_BY_SLUG: dict[str, type[ConsentryError]] = {
    "unauthenticated": Unauthenticated,
    "forbidden": Forbidden,
    "not-found": NotFound,
    "conflict": Conflict,
    "validation-error": ValidationFailed,
    "rate-limited": RateLimited,
    "unavailable": Unavailable,
    "subject-not-found": SubjectNotFound,
    "rights-request-not-found": RightsRequestNotFound,
    "policy-version-exists": PolicyVersionExists,
    "marketing-consent-required": MarketingConsentRequired,
    "tenant-not-provisioned": TenantNotProvisioned,
}


def error_class(slug: str, status: int = 0) -> type[ConsentryError]:
    """The exception class for a problem: by slug if it has one, else by status."""
    return _BY_SLUG.get(slug) or _BY_STATUS.get(status) or ConsentryError


def register(slug: str, cls: type[ConsentryError]) -> None:
    """Raise `cls` for problems of `slug` from now on (for slugs this SDK does not know)."""
    _BY_SLUG[slug] = cls


def retry_after_seconds(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds (only the delta-seconds form consentry sends), or None."""
    value = response.headers.get("Retry-After", "").strip()
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the typed error of an error answer (problem+json or not); nothing below 400."""
    if response.status_code < 400:
        return
    body: dict[str, Any] = {}
    try:
        parsed = response.json()
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    type_ = str(body.get("type") or f"{TYPE_PREFIX}http-{response.status_code}")
    slug = type_.removeprefix(TYPE_PREFIX)
    cls = error_class(slug, response.status_code)
    raise cls(
        status=response.status_code,
        type=type_,
        title=str(body.get("title") or response.reason_phrase),
        detail=body.get("detail"),
        extensions={k: v for k, v in body.items() if k not in _STANDARD},
        retry_after=retry_after_seconds(response),
    )
