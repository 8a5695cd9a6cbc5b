"""The consent HTTP API: `create_app(settings)` builds it; nothing happens at import time."""

from __future__ import annotations

from fastapi import FastAPI

from consentry.consent.checks.views import router as checks_router
from consentry.consent.consents.receipting import ReceiptIssuer
from consentry.consent.consents.views import refs_router
from consentry.consent.consents.views import router as consents_router
from consentry.consent.consents.writer import CaptureWriter
from consentry.consent.keys.resolver import consent_key_resolver
from consentry.consent.keys.views import router as keys_router
from consentry.consent.policies.catalogue import PolicyCache
from consentry.consent.policies.views import router as policies_router
from consentry.consent.purposes.views import router as purposes_router
from consentry.consent.receipts.service import ReceiptSigner
from consentry.consent.receipts.views import router as receipts_router
from consentry.consent.rights.export import ExportLinks, link_key
from consentry.consent.rights.service import ErasurePolicy
from consentry.consent.rights.views import exports_router
from consentry.consent.rights.views import router as rights_router
from consentry.consent.rights.waker import WorkerWaker
from consentry.consent.settings import ApiSettings
from consentry.consent.tenants.service import SubjectKeys, TenantNames, ensure_tenant
from consentry.consent.tenants.views import router as tenants_router
from consentry.eventing.db import Pool
from consentry.httpapi.service import cli_settings, create_service_app


def create_app(settings: ApiSettings) -> FastAPI:
    """Build the consent API for `settings`."""
    sealer = settings.sealer()

    async def on_startup(app: FastAPI, pool: Pool) -> None:
        if settings.dev_api_key is not None:  # the dev key's tenant must exist
            async with pool.acquire() as conn, conn.transaction():
                await ensure_tenant(
                    conn,
                    sealer=sealer,
                    tenant_id=settings.dev_tenant_id,
                    name="development",
                    directory=settings.directory_sealer(),
                )
        app.state.subject_keys = SubjectKeys(pool, sealer)
        # Rights requests: notes and export keys are sealed; what an erasure waits for.
        app.state.sealer = sealer
        app.state.erasure_policy = ErasurePolicy(
            settings.expected_services, settings.erasure_await_recipients
        )
        # Wakes the `rights` worker after requests commit (rights/waker.py).
        app.state.rights_waker = WorkerWaker(pool)
        app.state.export_links = ExportLinks(
            link_key(settings.consent_master_key.get_secret_value())
        )
        # Signs consent receipts; each tenant's key is unsealed once and cached (docs/receipts.md).
        app.state.receipt_signer = ReceiptSigner(pool, sealer)
        # Purposes and policy versions for the consent rules, cached per tenant.
        app.state.policies = PolicyCache(pool, settings.policy_cache_seconds)
        app.state.receipt_issuer = ReceiptIssuer(
            app.state.receipt_signer, app.state.policies, TenantNames(pool).get
        )
        # Group commit: concurrent captures share transactions (consents/writer.py).
        writer = CaptureWriter(
            pool, max_batch=settings.capture_batch_max, flushers=settings.capture_writers
        )
        writer.start()
        app.state.capture_writer = writer

    async def on_shutdown(app: FastAPI) -> None:
        await app.state.capture_writer.stop()
        await app.state.rights_waker.close()

    return create_service_app(
        settings,
        title="consentry consent API",
        description="Record and read consent per subject and purpose. Subjects are stored and "
        "published only as pseudonymous references.",
        routers=[
            consents_router,
            refs_router,
            checks_router,
            keys_router,
            tenants_router,
            receipts_router,
            purposes_router,
            policies_router,
            rights_router,
            exports_router,
        ],
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        key_resolver=consent_key_resolver,
        body_limits={
            "/v1/checks": settings.batch_check_max_body_bytes,
            "/v1/subject-refs": settings.batch_check_max_body_bytes,
            "/v1/rights-requests": settings.rights_max_body_bytes,
        },
    )


def app_from_environment() -> FastAPI:
    """The API built from `CONSENTRY_*` settings: what each uvicorn worker process imports
    when `CONSENTRY_HTTP_WORKERS` > 1."""
    return create_app(cli_settings(ApiSettings))
