"""Rate limiting per API key: the token bucket, and a service app answering 429 with
Retry-After once a key has used its burst."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter, FastAPI

from consentry.devstack.pytest_plugin import FreshDatabase
from consentry.httpapi.auth import Authenticated, DevKeyResolver, KeyResolver
from consentry.httpapi.problems import Problem
from consentry.httpapi.ratelimit import KeyRateLimiter
from consentry.httpapi.service import ServiceApiSettings, create_service_app

KEY = "ratelimit-key-0123456789abcdef"
OTHER_KEY = "ratelimit-other-0123456789abcd"
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000e2")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_the_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(rate=2.0, burst=3, clock=clock)
    assert [limiter.wait_seconds("k") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.wait_seconds("k") == pytest.approx(0.5)  # one token comes in 1/rate s
    assert limiter.wait_seconds("other") == 0.0  # buckets are per key
    clock.now += 0.5
    assert limiter.wait_seconds("k") == 0.0
    assert limiter.wait_seconds("k") > 0
    clock.now += 60  # a long pause refills only up to the burst
    assert [limiter.wait_seconds("k") for _ in range(4)][-1] > 0


def test_a_clock_stepping_back_adds_no_tokens() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(rate=1.0, burst=1, clock=clock)
    assert limiter.wait_seconds("k") == 0.0
    clock.now -= 3600
    assert limiter.wait_seconds("k") > 0


def test_rate_zero_turns_the_limit_off() -> None:
    limiter = KeyRateLimiter(rate=0, burst=1)
    assert not limiter.enabled
    assert all(limiter.wait_seconds("k") == 0.0 for _ in range(1000))


def test_check_raises_a_429_problem_with_whole_seconds_to_wait() -> None:
    clock = Clock()
    limiter = KeyRateLimiter(rate=0.25, burst=1, clock=clock)
    limiter.check("k")
    with pytest.raises(Problem) as raised:
        limiter.check("k")
    assert raised.value.status == 429
    assert raised.value.slug == "rate-limited"
    assert raised.value.headers == {"Retry-After": "4"}


def _two_keys(pool: object, settings: ServiceApiSettings) -> KeyResolver:
    class TwoKeys:
        async def resolve(self, key: str):  # type: ignore[no-untyped-def]
            own = await DevKeyResolver(KEY, TENANT).resolve(key)
            other = await DevKeyResolver(OTHER_KEY, TENANT).resolve(key)
            if other is not None:
                return type(other)(other.tenant_id, other.scopes, "other")
            return own

    return TwoKeys()


@pytest_asyncio.fixture
async def service(fresh_database: FreshDatabase) -> AsyncIterator[FastAPI]:
    settings = ServiceApiSettings(
        database_url=await fresh_database("ratelimit"),
        dev_api_key=KEY,
        dev_tenant_id=TENANT,
        environment="test",
        http_rate_limit_per_second=0.5,
        http_rate_limit_burst=2,
    )
    router = APIRouter()

    @router.get("/whoami")
    async def whoami(principal: Authenticated) -> dict[str, str]:
        return {"key": principal.key_id}

    app = create_service_app(
        settings, title="t", description="t", routers=[router], key_resolver=_two_keys
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.mark.integration
async def test_a_service_answers_429_with_retry_after_per_key(service: FastAPI) -> None:
    transport = httpx.ASGITransport(app=service)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        own = {"Authorization": f"Bearer {KEY}"}
        statuses = [(await client.get("/whoami", headers=own)).status_code for _ in range(2)]
        assert statuses == [200, 200]
        limited = await client.get("/whoami", headers=own)
        assert limited.status_code == 429
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert limited.json()["type"] == "urn:consentry:problem:rate-limited"
        assert limited.headers["Retry-After"] == "2"  # 1 token at 0.5/s
        # Another key has its own bucket; a bad key is still 401, never 429.
        other = await client.get("/whoami", headers={"Authorization": f"Bearer {OTHER_KEY}"})
        assert other.status_code == 200
        assert other.json() == {"key": "other"}
        unknown = await client.get("/whoami", headers={"Authorization": "Bearer nope"})
        assert unknown.status_code == 401
        # Health probes are never limited.
        probes = [(await client.get("/healthz")).status_code for _ in range(5)]
        assert probes == [200] * 5
