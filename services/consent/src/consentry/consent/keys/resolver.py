"""The consent API's key resolver: its own keys (`consentry.httpapi.keys.DbKeyResolver`), then
the dev key when one is configured (`consentry.httpapi.keys.settings_key_resolver`)."""

from __future__ import annotations

from consentry.httpapi.keys import NEGATIVE_CACHE_SECONDS, DbKeyResolver
from consentry.httpapi.keys import settings_key_resolver as consent_key_resolver

__all__ = ["NEGATIVE_CACHE_SECONDS", "DbKeyResolver", "consent_key_resolver"]
