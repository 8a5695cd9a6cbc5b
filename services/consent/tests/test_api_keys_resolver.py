"""Key resolution: the cache that keeps the hot path off the database, and its limits."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import asyncpg
import pytest
import pytest_asyncio

from consentry.consent.keys.resolver import NEGATIVE_CACHE_SECONDS, DbKeyResolver
from consentry.consent.keys.service import new_key, revoke_key
from consentry.consent.settings import ApiSettings
from consentry.eventing.db import Pool
from consentry.httpapi.auth import ALL_SCOPES, ChainKeyResolver
from consentry.httpapi.keys import parse_key

from .conftest import MakeTenant

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest_asyncio.fixture
async def pool(app_dsn: str) -> AsyncIterator[Pool]:
    pool = await asyncpg.create_pool(app_dsn, min_size=1, max_size=4)
    assert pool is not None
    yield pool
    await pool.close()


async def test_a_hot_key_is_looked_up_once(pool: Pool, make_tenant: MakeTenant) -> None:
    tenant = await make_tenant(scopes=["consent:read", "consent:write"])
    resolver = DbKeyResolver(pool, cache_seconds=5, clock=Clock())
    principals = await asyncio.gather(*(resolver.resolve(tenant.key) for _ in range(50)))
    principals += [await resolver.resolve(tenant.key) for _ in range(50)]
    assert resolver.queries == 1  # one query for 100 requests, concurrent ones included
    assert {p.tenant_id if p else None for p in principals} == {tenant.tenant_id}
    principal = principals[0]
    assert principal is not None
    assert principal.scopes == {"consent:read", "consent:write"}
    assert principal.key_id == tenant.key_id


async def test_a_wrong_secret_is_refused_and_does_not_disturb_the_cache(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    resolver = DbKeyResolver(pool, cache_seconds=5, clock=Clock())
    parsed = parse_key(tenant.key)
    assert parsed is not None
    forged = f"csk_{parsed[0]}_{'B' * 43}"
    assert await resolver.resolve(forged) is None
    assert await resolver.resolve(tenant.key) is not None
    assert await resolver.resolve(forged) is None
    assert resolver.queries == 1
    assert await resolver.resolve("not-a-key") is None
    assert resolver.queries == 1  # malformed keys never reach the database


async def test_another_process_sees_a_revocation_within_the_cache_time(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    clock = Clock()
    here = DbKeyResolver(pool, cache_seconds=5, clock=clock)
    there = DbKeyResolver(pool, cache_seconds=5, clock=clock)  # as in another API process
    assert await here.resolve(tenant.key) is not None
    assert await there.resolve(tenant.key) is not None

    await revoke_key(pool, tenant_id=tenant.tenant_id, key_id=tenant.key_id)
    here.forget(tenant.key_id)  # what the revoking process does after the commit
    assert await here.resolve(tenant.key) is None
    assert await there.resolve(tenant.key) is not None  # still cached there
    clock.now += 5.01
    assert await there.resolve(tenant.key) is None
    clock.now += 60
    assert await there.resolve(tenant.key) is None  # revoked stays revoked


async def test_unknown_keys_are_remembered_only_briefly(
    pool: Pool, make_tenant: MakeTenant, db: asyncpg.Connection
) -> None:
    tenant = await make_tenant()
    clock = Clock()
    resolver = DbKeyResolver(pool, cache_seconds=30, clock=clock)
    key_id, key = new_key()
    assert await resolver.resolve(key) is None
    # The key appears (as if created through another process a moment later).
    secret = key.split("_", 2)[2]
    async with db.transaction():
        await db.execute(
            "SELECT set_config('consentry.tenant_id', $1, true)", str(tenant.tenant_id)
        )
        await db.execute(
            "INSERT INTO api_keys (id, tenant_id, name, scopes, secret_hash) "
            "VALUES ($1, $2, 'late', '{consent:read}', $3)",
            key_id,
            tenant.tenant_id,
            hashlib.sha256(secret.encode()).digest(),
        )
    assert await resolver.resolve(key) is None  # the negative answer is still cached
    clock.now += NEGATIVE_CACHE_SECONDS + 0.01
    principal = await resolver.resolve(key)
    assert principal is not None
    assert principal.scopes == {"consent:read"}


async def test_no_cache_asks_every_time(pool: Pool, make_tenant: MakeTenant) -> None:
    tenant = await make_tenant()
    resolver = DbKeyResolver(pool, cache_seconds=0)
    for _ in range(3):
        assert await resolver.resolve(tenant.key) is not None
    assert resolver.queries == 3


async def test_a_load_racing_a_revocation_is_not_cached(
    pool: Pool, make_tenant: MakeTenant
) -> None:
    tenant = await make_tenant()
    read, gate = asyncio.Event(), asyncio.Event()

    class Slow(DbKeyResolver):
        """Holds the database's answer back until the gate opens."""

        async def _fetch(self, key_id: str) -> asyncpg.Record | None:
            row = await super()._fetch(key_id)
            read.set()
            await gate.wait()
            return row

    resolver = Slow(pool, cache_seconds=60, clock=Clock())
    racing = asyncio.ensure_future(resolver.resolve(tenant.key))
    await read.wait()  # the key was read while still valid
    await revoke_key(pool, tenant_id=tenant.tenant_id, key_id=tenant.key_id)
    resolver.forget(tenant.key_id)
    gate.set()
    assert await racing is not None  # it read the key before the revocation: answered as valid
    assert await resolver.resolve(tenant.key) is None  # but that answer was not kept


async def test_the_dev_key_is_chained_only_when_configured(
    pool: Pool, app_dsn: str, make_tenant: MakeTenant
) -> None:
    from consentry.consent.keys.resolver import consent_key_resolver

    tenant = await make_tenant()
    without = consent_key_resolver(pool, ApiSettings(database_url=app_dsn, environment="test"))
    with_dev = consent_key_resolver(
        pool,
        ApiSettings(
            database_url=app_dsn, environment="test", dev_api_key="a-dev-key-for-this-test-only"
        ),
    )
    assert isinstance(with_dev, ChainKeyResolver)
    assert await without.resolve("a-dev-key-for-this-test-only") is None
    dev = await with_dev.resolve("a-dev-key-for-this-test-only")
    assert dev is not None
    assert dev.scopes == ALL_SCOPES
    assert dev.key_id == "dev"
    for resolver in (without, with_dev):
        principal = await resolver.resolve(tenant.key)
        assert principal is not None
        assert principal.tenant_id == tenant.tenant_id


@pytest.mark.parametrize(
    ("environment", "dev_key", "accepted"),
    [
        ("production", None, True),
        ("production", "consentry-dev-key", False),
        ("production", "short-key", False),
        ("production", "a-random-strong-key-of-32-characters", True),
        ("development", "consentry-dev-key", True),
    ],
)
def test_the_dev_key_is_optional_and_weak_ones_are_refused_in_production(
    environment: str, dev_key: str | None, accepted: bool
) -> None:
    def settings() -> ApiSettings:
        return ApiSettings(
            database_url="postgresql://h/db",
            environment=environment,
            dev_api_key=dev_key,
            consent_master_key="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",  # not the dev one
            directory_key="ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=",  # nor this
        )

    if accepted:
        assert (settings().dev_api_key is None) == (dev_key is None)
    else:
        with pytest.raises(ValueError, match="refused outside development"):
            settings()
