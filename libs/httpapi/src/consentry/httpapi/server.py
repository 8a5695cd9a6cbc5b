"""Settings, app assembly and the uvicorn runner shared by every HTTP API process."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from uuid import UUID

import uvicorn
from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from pydantic import Field, SecretStr, model_validator

from consentry.eventing import metrics, tracing
from consentry.eventing.settings import ConsentrySettings, Environment
from consentry.httpapi import problems
from consentry.httpapi.middleware import BodySizeLimit, RequestLog, TraceContext

# The well-known development key `make run` uses; refused in production.
DEV_API_KEY = "consentry-dev-key"
MIN_KEY_LENGTH = 24


class HttpSettings(ConsentrySettings):
    """Where an API listens and how much it accepts."""

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    http_max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    http_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="processes serving the API on one port (uvicorn workers); each has its "
        "own database pool, caches and group-commit writer",
    )
    http_keep_alive_seconds: int = Field(
        default=75,
        ge=1,
        le=3600,
        description="how long an idle keep-alive connection stays open; longer than the "
        "clients' own idle expiry (httpx: 5 s), so a client never reuses a connection the "
        "server is closing at that moment (a reset request)",
    )
    http_rate_limit_per_second: float = Field(
        default=5_000.0,
        ge=0,
        description="requests per second each API key may make to one API process "
        "(token bucket; 0 turns the limit off); over it: 429 rate-limited with Retry-After",
    )
    http_rate_limit_burst: int = Field(
        default=10_000, ge=1, description="requests a key may make at once above the rate"
    )


def refuse_weak_dev_key(key: SecretStr | None, environment: Environment) -> None:
    """Raise ValueError for the well-known or a short development key outside
    development/test (settings validators call it; no key is fine)."""
    if key is None or environment in (Environment.DEVELOPMENT, Environment.TEST):
        return
    value = key.get_secret_value()
    if value == DEV_API_KEY or len(value) < MIN_KEY_LENGTH:
        raise ValueError(
            "the development API key or a short key is refused outside development; "
            f"set a random key of at least {MIN_KEY_LENGTH} characters, or none"
        )


class DevAuthSettings(ConsentrySettings):
    """The single development API key and its tenant (until key management lands)."""

    dev_api_key: SecretStr = Field(description="API key accepted for the dev tenant")
    dev_tenant_id: UUID = Field(description="tenant the dev API key belongs to")

    @model_validator(mode="after")
    def _refuse_weak_key_outside_development(self) -> DevAuthSettings:
        refuse_weak_dev_key(self.dev_api_key, self.environment)
        return self


Check = Callable[[], Awaitable[None]]


def health_router(readiness: dict[str, Check]) -> APIRouter:
    """`/healthz` (the process is up) and `/readyz` (each dependency answers)."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """Readiness: every dependency answers."""
        results: dict[str, str] = {}
        for name, check in readiness.items():
            try:
                await check()
                results[name] = "ok"
            except Exception as exc:  # a readiness probe reports, it does not raise
                results[name] = f"failed: {type(exc).__name__}"
        ready = all(value == "ok" for value in results.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": results}, 200 if ready else 503
        )

    return router


def harden(
    app: FastAPI, settings: HttpSettings, body_limits: Mapping[str, int] | None = None
) -> FastAPI:
    """Install problem details, the trace context, the request log and metrics, the body-size
    limit and `GET /metrics` (Prometheus text, no personal data) on `app` (`body_limits`:
    other limits for exact paths, e.g. batch endpoints). Exported traces are turned on here,
    in each API process, when `OTEL_*` variables ask for them (`tracing.configure`)."""
    problems.install(app)
    tracing.configure(metrics.service_name())
    app.add_middleware(BodySizeLimit, max_bytes=settings.http_max_body_bytes, per_path=body_limits)
    app.add_middleware(RequestLog, service=metrics.service_name())
    app.add_middleware(TraceContext)  # outermost: the request log sees the request's trace

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:  # sync: collection runs in the thread pool
        return Response(metrics.exposition(), media_type=metrics.CONTENT_TYPE_LATEST)

    return app


def uvicorn_options(settings: HttpSettings) -> dict[str, Any]:
    """uvicorn's options for an API process (`serve`)."""
    return {
        "host": settings.http_host,
        "port": settings.http_port,
        "log_config": None,
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "lifespan": "on",
        "timeout_keep_alive": settings.http_keep_alive_seconds,
    }


def serve(
    app: FastAPI | Callable[[], FastAPI], settings: HttpSettings, factory: str | None = None
) -> None:
    """Run `app` under uvicorn (logging is configured by consentry, not uvicorn).

    With `http_workers` > 1, uvicorn starts that many worker processes on one socket; each
    imports `factory` (`"module:function"`, a function of no arguments that builds the app
    from the environment), so `factory` is then required.
    """
    options = uvicorn_options(settings)
    if settings.http_workers > 1:
        if factory is None:
            raise ValueError("http_workers > 1 needs the app factory's import path")
        # One scrape reaches one worker: they share their metrics through files there.
        os.environ.setdefault(
            metrics.MULTIPROCESS_DIR_ENV, tempfile.mkdtemp(prefix="consentry-metrics-")
        )
        uvicorn.run(factory, factory=True, workers=settings.http_workers, **options)
        return
    uvicorn.Server(uvicorn.Config(app, **options)).run()
