"""The preferences HTTP API: `create_app(settings)` builds it; nothing happens at import time."""

from __future__ import annotations

from fastapi import FastAPI

from consentry.eventing.db import Pool
from consentry.httpapi.keys import settings_key_resolver
from consentry.httpapi.service import cli_settings, create_service_app
from consentry.preferences.links.pages import router as pages_router
from consentry.preferences.links.views import router as links_router
from consentry.preferences.lists.views import FILTER_PATH
from consentry.preferences.lists.views import router as lists_router
from consentry.preferences.settings import ApiSettings
from consentry.preferences.subjects.views import router as subjects_router
from consentry.preferences.tenants import TenantKeyring
from consentry.preferences.topics.views import router as topics_router


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the preferences API for `settings`."""
    sealer = settings.sealer()

    async def on_startup(app: FastAPI, pool: Pool) -> None:
        app.state.keyring = TenantKeyring(pool, sealer)
        app.state.settings = settings

    return create_service_app(
        settings,
        title="consentry preferences API",
        description="Communication topics and each person's preferences, one-click unsubscribe "
        "(RFC 8058), the preference-center page, and marketing lists with suppression. "
        "Subjects are stored and published only as pseudonymous references.",
        routers=[topics_router, subjects_router, links_router, pages_router, lists_router],
        on_startup=on_startup,
        key_resolver=settings_key_resolver,
        body_limits={FILTER_PATH: settings.filter_max_body_bytes},
    )


def app_from_environment() -> FastAPI:
    """The API built from `CONSENTRY_*` settings (each uvicorn worker process imports it)."""
    return create_app(cli_settings(ApiSettings))
