"""Resolving presented API keys against the service's database, with a short in-memory cache.

Every service with tenant API keys has the SQL function `consentry_resolve_api_key(key_id)`
(tenant, scopes, secret hash, revocation): the consent service over the keys it manages,
the others over their replica of the tenant directory (ADR 0008).

The hot path (thousands of requests a second) must not query per request. `DbKeyResolver`
keeps what `consentry_resolve_api_key()` answered for a key id (tenant, scopes, secret hash,
revocation) for `cache_seconds` and checks each presented secret against the cached hash,
so a wrong secret never evicts or replaces a good entry. Unknown ids are remembered for at
most `NEGATIVE_CACHE_SECONDS`, so a key created a moment ago works almost at once. One
query answers all concurrent requests for an id that is not cached (single flight).

Revocation through this process forgets the id at once (`forget`); another process trusts
its cached entry until it expires, so a revoked key keeps working there for at most
`cache_seconds` (`CONSENTRY_API_KEY_CACHE_SECONDS`, 5 s by default; 0 disables the cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from cachetools import TLRUCache
from pydantic import Field, SecretStr, model_validator

from consentry.eventing.db import Pool
from consentry.eventing.settings import ConsentrySettings
from consentry.httpapi.auth import ChainKeyResolver, DevKeyResolver, KeyResolver, Principal
from consentry.httpapi.server import refuse_weak_dev_key

KEY_PREFIX = "csk_"
_KEY = re.compile(r"^csk_([a-z2-7]{16})_([A-Za-z0-9_-]{43})$")
_RESOLVE = "SELECT tenant_id, scopes, secret_hash, revoked_at FROM consentry_resolve_api_key($1)"

NEGATIVE_CACHE_SECONDS = 1.0
# The development tenant of `make run` and the tests (the dev key's, when one is set).
DEV_TENANT_ID = UUID("00000000-0000-4000-8000-000000000001")
MAX_CACHED_KEYS = 10_000


def hash_secret(secret: str) -> bytes:
    """SHA-256 of a key's secret part: what is stored and compared."""
    return hashlib.sha256(secret.encode()).digest()


def secret_matches(secret: str, secret_hash: bytes) -> bool:
    """Whether `secret` hashes to `secret_hash` (constant-time comparison)."""
    return hmac.compare_digest(hash_secret(secret), secret_hash)


def parse_key(key: str) -> tuple[str, str] | None:
    """The id and secret of a well-formed key (`csk_<id>_<secret>`), or None."""
    match = _KEY.match(key)
    return None if match is None else (match[1], match[2])


@dataclass(frozen=True, slots=True)
class _Entry:
    """What the database said about one key id (`principal` None: unknown or revoked)."""

    principal: Principal | None
    secret_hash: bytes = b""


_UNKNOWN = _Entry(None)


class DbKeyResolver:
    """Resolves `csk_…` keys through `consentry_resolve_api_key()`, caching by key id."""

    def __init__(
        self,
        pool: Pool,
        *,
        cache_seconds: float = 5.0,
        max_entries: int = MAX_CACHED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._ttl = cache_seconds
        self._negative_ttl = min(cache_seconds, NEGATIVE_CACHE_SECONDS)
        self._cache: TLRUCache[str, _Entry, float] = TLRUCache(
            max_entries, self._time_to_use, clock
        )
        self._loading: dict[str, asyncio.Future[_Entry]] = {}
        self._generation = 0  # bumped by forget(): a load that started before is not cached
        self.queries = 0  # how often the database was asked (for tests and metrics)

    def _time_to_use(self, _key_id: str, entry: _Entry, now: float) -> float:
        known = entry.principal is not None or entry.secret_hash
        return now + (self._ttl if known else self._negative_ttl)

    async def resolve(self, key: str) -> Principal | None:
        """The key's principal, or None for a malformed, unknown, revoked or wrong key."""
        parsed = parse_key(key)
        if parsed is None:
            return None  # not one of ours (maybe the dev key): no query
        key_id, secret = parsed
        entry = self._cache.get(key_id)
        if entry is None:
            entry = await self._load_once(key_id)
        if entry.principal is None or not secret_matches(secret, entry.secret_hash):
            return None
        return entry.principal

    def forget(self, key_id: str) -> None:
        """Drop the cached entry of `key_id` (after its revocation committed)."""
        self._generation += 1
        self._cache.pop(key_id, None)
        self._loading.pop(key_id, None)

    async def _load_once(self, key_id: str) -> _Entry:
        loading = self._loading.get(key_id)
        if loading is None:
            loading = asyncio.ensure_future(self._load(key_id))
            self._loading[key_id] = loading
            loading.add_done_callback(lambda done: self._loaded(key_id, done))
        # shield: a caller that goes away does not cancel the others' load
        return await asyncio.shield(loading)

    def _loaded(self, key_id: str, done: asyncio.Future[_Entry]) -> None:
        if self._loading.get(key_id) is done:
            del self._loading[key_id]
        if not done.cancelled():
            done.exception()  # retrieved: an error reaches the waiting callers, not the log

    async def _fetch(self, key_id: str) -> asyncpg.Record | None:
        async with self._pool.acquire() as conn:
            return await conn.fetchrow(_RESOLVE, key_id)

    async def _load(self, key_id: str) -> _Entry:
        generation = self._generation
        row = await self._fetch(key_id)
        self.queries += 1
        if row is None:
            entry = _UNKNOWN
        elif row["revoked_at"] is not None:
            entry = _Entry(None, secret_hash=row["secret_hash"])  # revoked: known, refused
        else:
            principal = Principal(row["tenant_id"], frozenset(row["scopes"]), key_id=key_id)
            entry = _Entry(principal, secret_hash=row["secret_hash"])
        if self._ttl > 0 and generation == self._generation:
            self._cache[key_id] = entry
        return entry


def database_key_resolver(
    pool: Pool,
    *,
    cache_seconds: float,
    dev_api_key: str | None = None,
    dev_tenant_id: UUID | None = None,
) -> KeyResolver:
    """Database keys, then the dev key when one is configured."""
    database = DbKeyResolver(pool, cache_seconds=cache_seconds)
    if dev_api_key is None or dev_tenant_id is None:
        return ChainKeyResolver([database])
    return ChainKeyResolver([database, DevKeyResolver(dev_api_key, dev_tenant_id)])


class ApiKeySettings(ConsentrySettings):
    """How an HTTP API accepts keys: the tenants' keys in its database (the consent
    service's own, or its replica of the tenant directory), cached briefly, and optionally
    one development key with every scope."""

    dev_api_key: SecretStr | None = Field(
        default=None,
        description="a development key with every scope for the dev tenant; unset (the "
        "default) accepts only the tenants' API keys (create-tenant / POST /v1/api-keys)",
    )
    dev_tenant_id: UUID = Field(
        default=DEV_TENANT_ID,
        description="the dev key's tenant (the consent service creates it at start-up when "
        "the dev key is set)",
    )
    api_key_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="how long a resolved API key is trusted without asking the database: a "
        "key revoked through another process keeps working for at most this long there",
    )

    @model_validator(mode="after")
    def _refuse_weak_dev_key_outside_development(self) -> ApiKeySettings:
        refuse_weak_dev_key(self.dev_api_key, self.environment)
        return self


def settings_key_resolver(pool: Pool, settings: ApiKeySettings) -> KeyResolver:
    """The resolver `settings` describe: database keys, then the dev key when one is set."""
    dev_key = settings.dev_api_key
    return database_key_resolver(
        pool,
        cache_seconds=settings.api_key_cache_seconds,
        dev_api_key=None if dev_key is None else dev_key.get_secret_value(),
        dev_tenant_id=settings.dev_tenant_id,
    )
