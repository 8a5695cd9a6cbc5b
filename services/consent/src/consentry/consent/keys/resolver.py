"""The consent API's key resolver: its own keys (`consentry.httpapi.keys.DbKeyResolver`), then
the dev key when one is configured."""

from __future__ import annotations

from consentry.consent.settings import ApiSettings
from consentry.eventing.db import Pool
from consentry.httpapi.auth import KeyResolver
from consentry.httpapi.keys import NEGATIVE_CACHE_SECONDS, DbKeyResolver, database_key_resolver

__all__ = ["NEGATIVE_CACHE_SECONDS", "DbKeyResolver", "consent_key_resolver"]


def consent_key_resolver(pool: Pool, settings: ApiSettings) -> KeyResolver:
    """The consent API's resolver: database keys, then the dev key when one is configured."""
    dev_key = settings.dev_api_key
    return database_key_resolver(
        pool,
        cache_seconds=settings.api_key_cache_seconds,
        dev_api_key=None if dev_key is None else dev_key.get_secret_value(),
        dev_tenant_id=settings.dev_tenant_id,
    )
