"""consentry's Python SDK: `AsyncConsentry` / `Consentry` for the HTTP APIs, typed errors,
and (extra `events`) `consentry.sdk.producer.EventProducer` for the intake topic; `traced`
names the W3C trace both carry (`consentry.sdk.tracing`)."""

from consentry.sdk.client import NO_RETRY, AsyncConsentry, Consentry, Retry
from consentry.sdk.errors import (
    Conflict,
    ConsentryError,
    Forbidden,
    MarketingConsentRequired,
    NotFound,
    PolicyVersionExists,
    RateLimited,
    RightsRequestNotFound,
    SubjectNotFound,
    TenantNotProvisioned,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
    error_class,
    register,
)
from consentry.sdk.tracing import traced

__all__ = [
    "NO_RETRY",
    "AsyncConsentry",
    "Conflict",
    "Consentry",
    "ConsentryError",
    "Forbidden",
    "MarketingConsentRequired",
    "NotFound",
    "PolicyVersionExists",
    "RateLimited",
    "Retry",
    "RightsRequestNotFound",
    "SubjectNotFound",
    "TenantNotProvisioned",
    "Unauthenticated",
    "Unavailable",
    "ValidationFailed",
    "error_class",
    "register",
    "traced",
]
