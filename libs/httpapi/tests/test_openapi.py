"""The error contract in the OpenAPI (`document_problems`), the plumbing's answers fuzzed
against it, and values PostgreSQL cannot hold answered 422 instead of 500."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import asyncpg
import httpx
import pytest
import pytest_asyncio
from fastapi import APIRouter, FastAPI, Path, Query
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict

from consentry.devstack.pytest_plugin import FreshDatabase
from consentry.httpapi.auth import Authenticated, ConsentWrite, DevKeyResolver
from consentry.httpapi.openapi import document_problems
from consentry.httpapi.problems import Problem
from consentry.httpapi.server import HttpSettings, harden, health_router
from consentry.httpapi.testing import SERVER_OWNED, fuzz_openapi, mass_assignment_failures

KEY = "openapi-key-0123456789abcdefgh"
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000e2")
PROBLEM = "application/problem+json"


class Thing(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: int


def make_app() -> FastAPI:
    """A small app with one route of each kind the documentation tells apart."""
    app = FastAPI()
    app.state.key_resolver = DevKeyResolver(KEY, TENANT)
    router = APIRouter(prefix="/v1")

    @router.put("/things/{thing_id}")
    async def put_thing(
        thing_id: Annotated[str, Path(max_length=20)], body: Thing, principal: ConsentWrite
    ) -> dict[str, int]:
        """Scoped, with a path parameter and a body."""
        return {"value": body.value}

    @router.get("/me")
    async def me(principal: Authenticated) -> dict[str, str]:
        """Any valid key, no scope."""
        return {"tenant": str(principal.tenant_id)}

    @router.get(
        "/pages/{token}", response_class=HTMLResponse, responses={410: {"description": "x"}}
    )
    async def page(token: str, gone: Annotated[bool, Query()] = False) -> HTMLResponse:
        """Public, an HTML page with a declared refusal."""
        if gone:
            raise Problem(410, "link-expired", "The link has expired")
        return HTMLResponse("<p>hello</p>")

    app.include_router(health_router({}))
    app.include_router(router)
    document_problems(app, skip_paths=["/healthz", "/readyz"])
    return harden(app, HttpSettings(http_max_body_bytes=1024))


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return make_app().openapi()


def responses(openapi: dict[str, Any], path: str, method: str) -> dict[str, Any]:
    found: dict[str, Any] = openapi["paths"][path][method]["responses"]
    return found


def test_scoped_routes_document_every_plumbing_answer(openapi: dict[str, Any]) -> None:
    answers = responses(openapi, "/v1/things/{thing_id}", "put")
    assert set(answers) == {"200", "400", "401", "403", "404", "413", "422", "429", "503"}
    for status, answer in answers.items():
        if status != "200":
            assert set(answer["content"]) == {PROBLEM}, status
    assert answers["422"]["content"][PROBLEM]["schema"]["$ref"].endswith("/ValidationProblem")
    assert answers["401"]["content"][PROBLEM]["schema"]["$ref"].endswith("/Problem")
    assert "consent:write" in answers["403"]["description"]
    assert answers["429"]["headers"]["Retry-After"]["required"] is True
    assert answers["503"]["headers"]["Retry-After"]["required"] is True
    operation = openapi["paths"]["/v1/things/{thing_id}"]["put"]
    assert operation["security"] == [{"apiKeyBearer": []}, {"apiKeyHeader": []}]


def test_what_does_not_apply_is_not_documented(openapi: dict[str, Any]) -> None:
    me = responses(openapi, "/v1/me", "get")
    assert set(me) == {"200", "401", "429", "503"}  # no scope, no path, no body
    page = responses(openapi, "/v1/pages/{token}", "get")
    assert set(page) == {"200", "404", "410", "422", "503"}  # public: no 401/403/429
    assert "security" not in openapi["paths"]["/v1/pages/{token}"]["get"]
    assert set(page["410"]["content"]) == {PROBLEM, "text/html"}  # a page answers HTML too
    assert set(responses(openapi, "/healthz", "get")) == {"200"}
    assert set(responses(openapi, "/readyz", "get")) == {"200"}


def test_the_schemas_are_problems_not_fastapis(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert schemas["Problem"]["required"] == ["type", "title", "status"]
    assert set(openapi["components"]["securitySchemes"]) == {"apiKeyBearer", "apiKeyHeader"}


def test_the_document_is_rewritten_once_and_kept() -> None:
    app = make_app()
    first = app.openapi()
    assert app.openapi() is first
    assert list(first["paths"]["/v1/me"]["get"]["responses"]) == ["200", "401", "429", "503"]


def test_the_plumbing_answers_as_documented() -> None:
    failures = fuzz_openapi(make_app(), headers={"X-API-Key": KEY}, max_examples=30)
    assert not failures, "\n\n".join(failures)


def test_an_undocumented_answer_fails_the_fuzzing() -> None:
    app = make_app()

    @app.get("/v1/teapot")
    async def teapot(principal: Authenticated) -> None:
        raise Problem(418, "teapot", "I am a teapot")

    @app.get("/v1/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    app.openapi_schema = None
    failures = fuzz_openapi(app, headers={"X-API-Key": KEY}, max_examples=5)
    assert [failure.split(":", 1)[0] for failure in failures] == [
        "GET /v1/teapot",
        "GET /v1/broken",
    ]
    assert "Undocumented status code" in failures[0]


@pytest_asyncio.fixture(loop_scope="session")
async def database_client(pg_server_dsn: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app whose routes hand a query parameter to PostgreSQL as is."""
    app = FastAPI()

    async def select(cast: str, value: object) -> Any:
        conn = await asyncpg.connect(pg_server_dsn)
        try:
            return await conn.fetchval(f"SELECT $1::{cast}", value)
        finally:
            await conn.close()

    @app.get("/number")
    async def number(n: int) -> int:
        result: int = await select("bigint", n)
        return result

    @app.get("/text")
    async def text(t: str) -> str:
        result: str = await select("text", t)
        return result

    harden(app, HttpSettings())
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


@pytest.mark.parametrize(
    "path", ["/number?n=" + str(2**64), "/number?n=-" + str(2**63 + 1), "/text?t=a%00b"]
)
async def test_a_value_postgresql_cannot_hold_is_422(
    database_client: httpx.AsyncClient, path: str
) -> None:
    response = await database_client.get(path)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["type"] == "urn:consentry:problem:invalid-value"
    assert "\x00" not in response.text


async def test_a_value_that_fits_passes(database_client: httpx.AsyncClient) -> None:
    assert (await database_client.get("/number?n=" + str(2**63 - 1))).json() == 2**63 - 1
    assert (await database_client.get("/text?t=plain")).json() == "plain"


class Lax(BaseModel):
    """A body model that ignores what it does not know (pydantic's default)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"value": 1}]})
    value: int


async def test_mass_assignment_is_caught(fresh_database: FreshDatabase) -> None:
    dsn = await fresh_database("httpapi")
    owner = await asyncpg.connect(dsn)
    await owner.execute("CREATE TABLE things (id text PRIMARY KEY, value int)")
    app = make_app()

    @app.post("/v1/lax/{thing_id}")
    async def lax(thing_id: uuid.UUID, body: Lax) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO things VALUES ($1, $2)", str(thing_id), body.value)
        finally:
            await conn.close()

    app.openapi_schema = None
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"X-API-Key": KEY}
        ) as client:
            probes, failures = await mass_assignment_failures(client, owner)
    finally:
        await owner.close()
    assert [probe.label for probe in probes] == [
        "PUT /v1/things/{thing_id}",
        "POST /v1/lax/{thing_id}",
    ]
    assert probes[0].injected == tuple(SERVER_OWNED)  # none of them is a field of Thing
    assert len(failures) == 2
    assert failures[0].startswith("POST /v1/lax/{thing_id}: 200 None; not refused: ['id'")
    assert failures[1] == "tables written by refused requests: ['things']"
