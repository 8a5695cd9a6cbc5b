"""The audit HTTP API: `create_app(settings)` builds it; nothing happens at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from consentry.audit.chain.views import router as chain_router
from consentry.audit.settings import ApiSettings
from consentry.eventing.db import create_pool
from consentry.httpapi.auth import DevKeyResolver
from consentry.httpapi.server import harden, health_router


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the audit API for `settings`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings)
        try:
            app.state.pool = pool
            app.state.key_resolver = DevKeyResolver(
                settings.dev_api_key.get_secret_value(), settings.dev_tenant_id
            )
            yield
        finally:
            await pool.close()

    app = FastAPI(
        title="consentry audit API",
        version="0.1.0",
        description="Read and verify the append-only, hash-chained audit log of a tenant.",
        lifespan=lifespan,
    )

    async def database_ready() -> None:
        await app.state.pool.fetchval("SELECT 1")

    app.include_router(health_router({"database": database_ready}))
    app.include_router(chain_router)
    return harden(app, settings)
