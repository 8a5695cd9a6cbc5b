"""Resolving presented API keys against the database, with a short in-memory cache.

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
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
from cachetools import TLRUCache

from consentry.consent.keys import repository
from consentry.consent.keys.service import parse_key, secret_matches
from consentry.consent.settings import ApiSettings
from consentry.eventing.db import Pool
from consentry.httpapi.auth import ChainKeyResolver, DevKeyResolver, KeyResolver, Principal

NEGATIVE_CACHE_SECONDS = 1.0
MAX_CACHED_KEYS = 10_000


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
            return await repository.resolve(conn, key_id=key_id)

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


def consent_key_resolver(pool: Pool, settings: ApiSettings) -> KeyResolver:
    """The consent API's resolver: database keys, then the dev key when one is configured."""
    database = DbKeyResolver(pool, cache_seconds=settings.api_key_cache_seconds)
    if settings.dev_api_key is None:
        return ChainKeyResolver([database])
    dev = DevKeyResolver(settings.dev_api_key.get_secret_value(), settings.dev_tenant_id)
    return ChainKeyResolver([database, dev])
