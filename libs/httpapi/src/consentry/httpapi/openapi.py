"""The error contract in every service's OpenAPI: problem documents and how to authenticate.

FastAPI documents the success answer of each route and a 422 in its own shape
(`HTTPValidationError`), which is not what the APIs answer. `document_problems(app)` rewrites
the generated document once:

- every error answer (status 400 and up) a route declares (`responses=` in its view, with a
  description only) gets the `Problem` schema under `application/problem+json`; routes that
  answer HTML pages (`text/html`) may answer errors as HTML too, so both are documented;
- the answers the shared plumbing gives are added where they apply: 401 `unauthenticated` and
  429 `rate-limited` on routes that need an API key, 403 `forbidden` when the key needs a scope
  (the scope is named), 404 on routes with path parameters, 413 `payload-too-large` on routes
  that take a body, 400 `bad-request` on those whose body FastAPI parses (bytes that are not
  JSON text), 422 `validation-error` (with `errors`), 503 `unavailable` /
  `tenant-not-provisioned` on every route but the health probes;
- routes that need an API key name the two ways of presenting it (security schemes).

A route-specific refusal (409, 410, …) is documented by its view with
`responses={409: {"description": "…"}}`; the content is filled in here. The slugs are in
docs/problems.md.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from consentry.httpapi.auth import authenticate
from consentry.httpapi.problems import MEDIA_TYPE, TYPE_PREFIX

SCHEMAS = "#/components/schemas/"
PROBLEM = "Problem"
VALIDATION_PROBLEM = "ValidationProblem"
BEARER = "apiKeyBearer"
HEADER = "apiKeyHeader"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# FastAPI's own 422 schemas, unused once every 422 is a problem document.
_FASTAPI_SCHEMAS = ("HTTPValidationError", "ValidationError")

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": PROBLEM,
    "type": "object",
    "description": "RFC 9457 problem details. Match on `type`, a URN "
    f"`{TYPE_PREFIX}<slug>` (docs/problems.md); some problems add extension members.",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {
            "type": "string",
            "pattern": "^" + TYPE_PREFIX.replace(":", "\\:") + "[a-z0-9-]+$",
            "examples": [TYPE_PREFIX + "not-found"],
        },
        "title": {"type": "string", "description": "a short summary of the problem type"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string", "description": "this occurrence; never echoes input"},
        "instance": {"type": "string", "description": "the route template that answered"},
    },
    "additionalProperties": True,
}

VALIDATION_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": VALIDATION_PROBLEM,
    "description": "A problem document; `validation-error` lists what was wrong in `errors` "
    "(never the input, which may be personal data).",
    "allOf": [{"$ref": SCHEMAS + PROBLEM}],
    "properties": {
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["location", "message"],
                "properties": {
                    "location": {"type": "array", "items": {"type": "string"}},
                    "message": {"type": "string"},
                },
            },
        }
    },
}

SECURITY_SCHEMES: dict[str, Any] = {
    BEARER: {
        "type": "http",
        "scheme": "bearer",
        "description": "`Authorization: Bearer <API key>`",
    },
    HEADER: {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "`X-API-Key: <API key>`",
    },
}

_RETRY_AFTER = {
    "Retry-After": {
        "description": "whole seconds to wait before retrying",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}

# Status → (description, headers) of the answers the shared plumbing gives.
_PLUMBING: dict[int, tuple[str, dict[str, Any] | None]] = {
    400: ("`bad-request`: the body could not be parsed (e.g. not UTF-8)", None),
    401: (
        "`unauthenticated`: no API key, or not a valid one",
        {
            "WWW-Authenticate": {
                "description": '`Bearer realm="consentry"`',
                "schema": {"type": "string"},
            }
        },
    ),
    403: ("`forbidden`: the API key lacks the scope `{scope}`", None),
    404: ("not found (also another tenant's): see the problem `type`", None),
    413: ("`payload-too-large`: the body exceeds the size limit", None),
    422: ("`validation-error` (with `errors`), or a refusal: see the problem `type`", None),
    429: ("`rate-limited`: too many requests with this API key", _RETRY_AFTER),
    503: (
        "`unavailable` (a dependency did not answer; nothing was recorded) or "
        "`tenant-not-provisioned`: retry after `Retry-After`",
        _RETRY_AFTER,
    ),
}


def document_problems(app: FastAPI, *, skip_paths: Iterable[str] = ()) -> None:
    """Make `app.openapi()` document its error answers (see the module docstring); routes at
    `skip_paths` (the health probes) are left as FastAPI documents them."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    skipped = frozenset(skip_paths)
    documented: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI until the routes change
        if not documented or documented[0] is not schema:
            _document(schema, app, skipped)
            documented[:] = [schema]
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _document(schema: dict[str, Any], app: FastAPI, skipped: frozenset[str]) -> None:
    paths: dict[str, Any] = schema.get("paths", {})
    # Routers are included lazily; the contexts carry each route's effective path and dependant.
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or not context.include_in_schema:
            continue
        path = context.path_format
        if path is None or path in skipped:
            continue
        dependant: Dependant = context.dependant
        for method in context.methods or ():
            operation = paths.get(path, {}).get(method.lower())
            if operation is not None:
                _document_operation(operation, dependant, method)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas[PROBLEM] = copy.deepcopy(PROBLEM_SCHEMA)
    schemas[VALIDATION_PROBLEM] = copy.deepcopy(VALIDATION_PROBLEM_SCHEMA)
    components.setdefault("securitySchemes", {}).update(copy.deepcopy(SECURITY_SCHEMES))
    for name in _FASTAPI_SCHEMAS:
        if name in schemas and f'"{SCHEMAS}{name}"' not in json.dumps(schema):
            del schemas[name]


def _document_operation(operation: dict[str, Any], dependant: Dependant, method: str) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    scopes = set(_required_scopes(dependant))
    authenticated = bool(scopes) or any(sub.call is authenticate for sub in _dependants(dependant))
    plumbing = {503}
    if authenticated:
        plumbing |= {401, 429}
        operation["security"] = [{BEARER: []}, {HEADER: []}]
    if scopes:
        plumbing.add(403)
    if dependant.path_params:
        plumbing.add(404)
    if method in _BODY_METHODS:
        plumbing.add(413)
    if dependant.body_params:
        plumbing.add(400)
    if "requestBody" in operation:  # also a body the view reads itself (`openapi_extra`)
        plumbing.add(422)
    for status in sorted(plumbing):
        description, headers = _PLUMBING[status]
        entry = responses.setdefault(str(status), {})
        entry.setdefault("description", description.format(scope=", ".join(sorted(scopes))))
        if headers:
            entry.setdefault("headers", {}).update(copy.deepcopy(headers))
    html = any("text/html" in (answer.get("content") or {}) for answer in responses.values())
    for code, entry in responses.items():
        if code.isdigit() and int(code) >= 400:
            entry["content"] = _problem_content(VALIDATION_PROBLEM if code == "422" else PROBLEM)
            if html:
                entry["content"]["text/html"] = {"schema": {"type": "string"}}
    operation["responses"] = dict(
        sorted(responses.items(), key=lambda item: (not item[0].isdigit(), item[0]))
    )


def _problem_content(name: str) -> dict[str, Any]:
    return {MEDIA_TYPE: {"schema": {"$ref": SCHEMAS + name}}}


def _dependants(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from _dependants(sub)


def _required_scopes(dependant: Dependant) -> Iterator[str]:
    """The scopes the route's `require(scope)` dependencies ask for."""
    for sub in _dependants(dependant):
        scope = getattr(sub.call, "scope", None)
        if isinstance(scope, str):
            yield scope
