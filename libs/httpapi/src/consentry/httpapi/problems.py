"""RFC 9457 problem details: every error answer is `application/problem+json`.

`type` is a machine-readable URN, `urn:consentry:problem:<slug>`; the catalogue of slugs is
in docs/problems.md. Validation errors list what was wrong without echoing the input, which
may be personal data.
"""

from __future__ import annotations

from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from consentry.eventing.logs import get_logger

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:consentry:problem:"
log = get_logger(__name__)

_DEFAULT_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-error",
    429: "rate-limited",
    503: "unavailable",
}


class Problem(Exception):  # noqa: N818 - RFC 9457's own name
    """Raise to answer with a problem document."""

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = headers
        self.extensions = extensions


def tenant_not_provisioned() -> Problem:
    """503 with `Retry-After`: the key's tenant has not reached this service through the
    tenant directory yet (ADR 0008)."""
    return Problem(
        503,
        "tenant-not-provisioned",
        "The tenant is not known to this service yet",
        detail="the tenant directory has not reached this service; retry shortly",
        headers={"Retry-After": "1"},
    )


def route_template(request: Request) -> str | None:
    """The matched route's template (`/v1/subjects/{subject_id}/…`), never the raw path,
    which may hold a subject identifier."""
    template = getattr(request.scope.get("route"), "path", None)
    return template if isinstance(template, str) else None


def problem_response(
    request: Request,
    status: int,
    slug: str,
    title: str,
    detail: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build a problem+json response."""
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + slug,
        "title": title,
        "status": status,
        "instance": route_template(request),
    }
    if detail:
        body["detail"] = detail
    body.update(extensions)
    body = {key: value for key, value in body.items() if value is not None}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Problem)
    return problem_response(
        request, exc.status, exc.slug, exc.title, exc.detail, exc.headers, **exc.extensions
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"location": [str(part) for part in error.get("loc", ())], "message": error.get("msg", "")}
        for error in exc.errors()
    ]
    return problem_response(
        request,
        422,
        "validation-error",
        "The request is not valid",
        "; ".join(f"{'.'.join(e['location'])}: {e['message']}" for e in errors)[:1000],
        errors=errors,
    )


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    slug = _DEFAULT_SLUGS.get(exc.status_code, "http-error")
    title = slug.replace("-", " ").capitalize()
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail != title else None
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, slug, title, detail, headers)


# The database (or the network to it) is down or saturated: try again shortly.
UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
RETRY_AFTER_SECONDS = 1


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("dependency unavailable", route=route_template(request), error=repr(exc))
    return problem_response(
        request,
        503,
        "unavailable",
        "Service temporarily unavailable",
        "a dependency did not answer; nothing was recorded, retry the request",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


async def _on_data_error(request: Request, exc: Exception) -> JSONResponse:
    # SQLSTATE class 22 (also asyncpg's own check of query arguments): a value that passed
    # validation but that PostgreSQL cannot hold, e.g. an integer beyond 64 bits or text with
    # a NUL character. The transaction rolled back; the value is not echoed.
    assert isinstance(exc, asyncpg.DataError)
    log.warning(
        "value refused by the database", route=route_template(request), sqlstate=exc.sqlstate
    )
    return problem_response(
        request,
        422,
        "invalid-value",
        "A value cannot be stored",
        "a value is out of range or not representable (e.g. an integer beyond 64 bits, or "
        "text with a NUL character); nothing was recorded",
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", route=route_template(request))
    return problem_response(request, 500, "internal-error", "Internal error")


def install(app: FastAPI) -> None:
    """Answer every error of `app` with problem details."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    for error in UNAVAILABLE:
        app.add_exception_handler(error, _on_unavailable)
    app.add_exception_handler(asyncpg.DataError, _on_data_error)
    app.add_exception_handler(Exception, _on_unexpected)
