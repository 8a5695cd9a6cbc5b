"""Test helpers for every service's HTTP API (used by the test suites, not by services).

`fuzz_openapi` runs schemathesis against an app in this process: each operation of its
OpenAPI gets valid and invalid requests; a 5xx, an undocumented status or content type, or a
body that does not match the documented schema is a failure. `mass_assignment_failures`
sends server-owned fields (`id`, `tenant_id`, `created_at`, …) in every JSON write body and
expects 422 `validation-error` naming each of them, with the database unchanged.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, given, settings, strategies
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.python import asgi

from consentry.httpapi.problems import MEDIA_TYPE, TYPE_PREFIX

# The checks every answer must pass: the "no 5xx, every response matches the schema".
CHECKS = (
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
)


@contextlib.contextmanager
def _lifespans() -> Iterator[None]:
    """schemathesis starts an app's lifespan on first use (in a thread of its own) and keeps
    it; end it here, before the test's database goes away."""
    try:
        yield
    finally:
        asgi.shutdown_lifespans()


def _tolerating(statuses: frozenset[int]) -> schemathesis.CheckFunction:
    """`status_code_conformance`, except for `statuses` (known gaps in an operation's
    documentation; every other check still applies to those answers)."""
    conformance = schemathesis.checks.status_code_conformance

    def status_code_conformance(
        ctx: schemathesis.CheckContext,
        response: schemathesis.Response,
        case: schemathesis.Case[Any],
    ) -> bool | None:
        if response.status_code in statuses:
            return None
        result: bool | None = conformance(ctx, response, case)
        return result

    return status_code_conformance


def fuzz_openapi(
    app: FastAPI,
    *,
    headers: dict[str, str],
    max_examples: int = 20,
    exclude: Iterable[str] = (),
    undocumented: Mapping[str, Iterable[int]] | None = None,
) -> list[str]:
    """Fuzz every operation of `app`'s OpenAPI (positive and negative data, a fixed seed) with
    `headers` on every request; the failures, one text per failing operation.

    `exclude` names operations (`"GET /v1/…"`) to leave out; `undocumented` maps an
    operation to statuses it may answer without documenting them (known gaps). The app's
    lifespan runs in schemathesis' thread for the duration of the call.
    """
    failures: list[str] = []
    skipped = set(exclude)
    tolerated = {label: frozenset(statuses) for label, statuses in (undocumented or {}).items()}
    with _lifespans():
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        for result in schema.get_all_operations():
            if not isinstance(result, Ok):
                failures.append(f"the OpenAPI is not valid: {result.err()}")
                continue
            operation = result.ok()
            if operation.label in skipped:
                continue
            checks = list(CHECKS)
            if operation.label in tolerated:
                checks[1] = _tolerating(tolerated[operation.label])
            try:
                _fuzz(operation, checks, headers, max_examples)
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup
                failures.append(f"{operation.label}: {exc}")
    return failures


def _fuzz(
    operation: schemathesis.APIOperation[Any, Any, Any, Any],
    checks: list[schemathesis.CheckFunction],
    headers: dict[str, str],
    max_examples: int,
) -> None:
    """Send `max_examples` generated requests to `operation`; raise on the first failure."""
    cases = strategies.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,  # the same requests on every run (CI is deterministic)
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(case=cases)
    def run(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(headers=headers, checks=checks)

    run()


# Fields the server owns: a client must not be able to set them through any write body.
SERVER_OWNED: dict[str, Any] = {
    "id": "00000000-0000-4000-8000-00000000a55e",
    "tenant_id": "00000000-0000-4000-8000-00000000a55e",
    "created_at": "2026-01-01T00:00:00Z",
    "updated_at": "2026-01-01T00:00:00Z",
    "version": 7,
    "state": "completed",
    "status": "given",
    "deleted_at": "2026-01-01T00:00:00Z",
}
_WRITES = ("post", "put", "patch")
_PARAMETER = re.compile(r"\{([^}/]+)\}")


@dataclass(frozen=True)
class Probe:
    """One write request with server-owned fields the body's schema does not declare."""

    method: str
    template: str
    path: str
    body: dict[str, Any]
    injected: tuple[str, ...]

    @property
    def label(self) -> str:
        """`METHOD /path/{template}`, as the OpenAPI names the operation."""
        return f"{self.method.upper()} {self.template}"


def mass_assignment_probes(openapi: dict[str, Any], *, exclude: Iterable[str] = ()) -> list[Probe]:
    """A probe for each write operation with a JSON object body (not those in `exclude`,
    `"POST /v1/…"` by template): the schema's first example, or `{}`, plus every server-owned
    field the body does not declare."""
    components: dict[str, Any] = openapi.get("components", {}).get("schemas", {})
    skipped = set(exclude)
    probes = []
    for template, operations in openapi.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in _WRITES or f"{method.upper()} {template}" in skipped:
                continue
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" not in content:
                continue
            body_schema = _object_schema(content["application/json"].get("schema", {}), components)
            if body_schema is None:
                continue
            examples = body_schema.get("examples") or [{}]
            declared = set(body_schema["properties"])
            injected = tuple(name for name in SERVER_OWNED if name not in declared)
            body = {**examples[0], **{name: SERVER_OWNED[name] for name in injected}}
            values = {
                name: _path_value(operation, name, components)
                for name in _PARAMETER.findall(template)
            }
            path = template.format(**values)
            probes.append(Probe(method, template, path, body, injected))
    return probes


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _object_schema(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any] | None:
    """The object schema with `properties` of a body (the first one of an optional body's
    `anyOf`), or None."""
    schema = _resolve(schema, components)
    if "properties" in schema:
        return schema
    for alternative in schema.get("anyOf", []):
        found = _object_schema(alternative, components)
        if found is not None:
            return found
    return None


def _path_value(operation: dict[str, Any], name: str, components: dict[str, Any]) -> str:
    """A plausible value of path parameter `name`: a fresh UUID, 1, or a slug."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") == "path" and parameter.get("name") == name:
            schema = _resolve(parameter.get("schema", {}), components)
            if schema.get("format") == "uuid":
                return str(uuid.uuid4())
            if schema.get("type") == "integer":
                return "1"
    return "mass-assignment-probe"


async def database_fingerprint(conn: asyncpg.Connection) -> dict[str, str]:
    """An md5 of every table's rows in the `public` schema (as the owner: every tenant's)."""
    tables = await conn.fetch(
        "SELECT quote_ident(table_name) AS name FROM information_schema.tables"
        " WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name"
    )
    fingerprint = {}
    for table in tables:
        name = table["name"]
        digest = await conn.fetchval(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"  # noqa: S608
            f" FROM public.{name} t"
        )
        fingerprint[name] = digest
    return fingerprint


async def mass_assignment_failures(
    client: httpx.AsyncClient, owner: asyncpg.Connection, *, exclude: Iterable[str] = ()
) -> tuple[list[Probe], list[str]]:
    """Send every probe of `client`'s API (its OpenAPI) and check each is refused with 422
    `validation-error` naming each injected field, and that no table changed (`owner` sees
    every tenant's rows). The probes sent and the failures."""
    openapi = (await client.get("/openapi.json")).raise_for_status().json()
    probes = [probe for probe in mass_assignment_probes(openapi, exclude=exclude) if probe.injected]
    before = await database_fingerprint(owner)
    failures = []
    for probe in probes:
        response = await client.request(probe.method, probe.path, json=probe.body)
        problem = response.json() if response.headers.get("content-type") == MEDIA_TYPE else {}
        refused = {
            tuple(error["location"])
            for error in problem.get("errors", [])
            if "extra" in error.get("message", "").lower()
        }
        missing = [name for name in probe.injected if ("body", name) not in refused]
        if (
            response.status_code != 422
            or problem.get("type") != TYPE_PREFIX + "validation-error"
            or missing
        ):
            failures.append(
                f"{probe.label}: {response.status_code} {problem.get('type')}; "
                f"not refused: {missing}"
            )
    after = await database_fingerprint(owner)
    changed = sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )
    if changed:
        failures.append(f"tables written by refused requests: {changed}")
    return probes, failures
