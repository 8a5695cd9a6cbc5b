"""The subprocessors HTTP API: `create_app(settings)` builds it; nothing happens at import time."""

from __future__ import annotations

from datetime import timedelta

from fastapi import FastAPI

from consentry.eventing.db import Pool
from consentry.httpapi.keys import settings_key_resolver
from consentry.httpapi.service import cli_settings, create_service_app
from consentry.subprocessors.deliveries.views import router as deliveries_router
from consentry.subprocessors.directory.tenants import KnownTenants
from consentry.subprocessors.recipients.service import RecipientRules
from consentry.subprocessors.recipients.views import router as recipients_router
from consentry.subprocessors.settings import ApiSettings


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the subprocessors API for `settings`."""
    rules = RecipientRules(
        sealer=settings.sealer(),
        loopback_http_allowed=settings.loopback_http_allowed,
        rotation_grace=timedelta(seconds=settings.secret_rotation_grace_seconds),
    )

    async def on_startup(app: FastAPI, pool: Pool) -> None:
        app.state.rules = rules
        app.state.settings = settings
        app.state.tenants = KnownTenants(pool)

    return create_service_app(
        settings,
        title="consentry subprocessors API",
        description="The registry of recipients (payment and billing providers, affiliates, "
        "joint-marketing partners), what each was told about erasures and consent "
        "withdrawals, and their signed acknowledgements (GDPR Art. 19). Notices are "
        "Standard Webhooks; docs/webhooks.md is the contract for recipients.",
        routers=[recipients_router, deliveries_router],
        on_startup=on_startup,
        key_resolver=settings_key_resolver,
    )


def app_from_environment() -> FastAPI:
    """The API built from `CONSENTRY_*` settings (each uvicorn worker process imports it)."""
    return create_app(cli_settings(ApiSettings))
