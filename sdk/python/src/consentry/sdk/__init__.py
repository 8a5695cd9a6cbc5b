"""consentry's Python SDK: `AsyncConsentry` / `Consentry` for the HTTP APIs, typed errors,
and (extra `events`) `consentry.sdk.producer.EventProducer` for the intake topic."""

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
]
