"""The consent HTTP API: `create_app(settings)` builds it; nothing happens at import time."""

from __future__ import annotations

from fastapi import FastAPI

from consentry.consent.consents.views import router as consents_router
from consentry.consent.settings import ApiSettings
from consentry.consent.tenants.service import SubjectKeys, ensure_tenant
from consentry.eventing.db import Pool
from consentry.httpapi.service import create_service_app


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the consent API for `settings`."""

    async def on_startup(app: FastAPI, pool: Pool) -> None:
        async with pool.acquire() as conn:
            await ensure_tenant(conn, tenant_id=settings.dev_tenant_id, name="development")
        app.state.subject_keys = SubjectKeys(pool)

    return create_service_app(
        settings,
        title="consentry consent API",
        description="Record and read consent per subject and purpose. Subjects are stored and "
        "published only as pseudonymous references.",
        routers=[consents_router],
        on_startup=on_startup,
    )
