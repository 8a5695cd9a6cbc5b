"""The consent HTTP API: `create_app(settings)` builds it; nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from consentry.consent.consents.views import router as consents_router
from consentry.consent.settings import ApiSettings
from consentry.consent.tenants.service import SubjectKeys, ensure_tenant
from consentry.eventing.db import create_pool
from consentry.httpapi.auth import DevKeyResolver
from consentry.httpapi.server import harden, health_router


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the consent API for `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        try:
            async with pool.acquire() as conn:
                await ensure_tenant(conn, tenant_id=settings.dev_tenant_id, name="development")
            app.state.pool = pool
            app.state.subject_keys = SubjectKeys(pool)
            app.state.key_resolver = DevKeyResolver(
                settings.dev_api_key.get_secret_value(), settings.dev_tenant_id
            )
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="consentry consent API",
        version="0.1.0",
        description="Record and read consent per subject and purpose. Subjects are stored and "
        "published only as pseudonymous references.",
        lifespan=lifespan,
    )

    async def database_ready() -> None:
        await app.state.pool.fetchval("SELECT 1")

    app.include_router(health_router({"database": database_ready}))
    app.include_router(consents_router)
    return harden(app, settings)
