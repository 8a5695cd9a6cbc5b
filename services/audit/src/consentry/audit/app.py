"""The audit HTTP API: `create_app(settings)` builds it; nothing happens at import time."""

from __future__ import annotations

from fastapi import FastAPI

from consentry.audit.chain.views import router as chain_router
from consentry.audit.settings import ApiSettings
from consentry.httpapi.service import cli_settings, create_service_app


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the audit API for `settings`."""
    return create_service_app(
        settings,
        title="consentry audit API",
        description="Read and verify the append-only, hash-chained audit log of a tenant.",
        routers=[chain_router],
    )


def app_from_environment() -> FastAPI:
    """The API built from `CONSENTRY_*` settings: what each uvicorn worker process imports
    when `CONSENTRY_HTTP_WORKERS` > 1."""
    return create_app(cli_settings(ApiSettings))
