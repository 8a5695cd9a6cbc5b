"""Problem details, API keys, the body limit and the request log, on a small app of their own."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import pytest_asyncio
import structlog
from fastapi import FastAPI
from pydantic import BaseModel

from consentry.eventing.logs import configure_logging
from consentry.httpapi.auth import ConsentWrite, DevKeyResolver
from consentry.httpapi.server import HttpSettings, harden

KEY = "plumbing-key-0123456789abcdef"
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000e1")
PROBLEM = "application/problem+json"


class Body(BaseModel):
    value: int


def make_app() -> FastAPI:
    app = FastAPI()
    app.state.key_resolver = DevKeyResolver(KEY, TENANT)

    @app.put("/things/{thing_id}")
    async def put_thing(thing_id: str, body: Body, principal: ConsentWrite) -> dict[str, object]:
        return {"thing": thing_id, "value": body.value, "tenant": str(principal.tenant_id)}

    @app.get("/broken")
    async def broken() -> None:
        raise RuntimeError("a bug")

    @app.get("/database-down")
    async def database_down() -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")

    return harden(app, HttpSettings(http_max_body_bytes=1024))


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers={"X-API-Key": KEY}
    ) as c:
        yield c


async def test_a_valid_request_passes(client: httpx.AsyncClient) -> None:
    response = await client.put("/things/a", json={"value": 1})
    assert response.status_code == 200
    assert response.json() == {"thing": "a", "value": 1, "tenant": str(TENANT)}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "slug"),
    [
        ("GET", "/nowhere", {}, 404, "not-found"),
        ("POST", "/things/a", {"json": {"value": 1}}, 405, "method-not-allowed"),
        ("PUT", "/things/a", {"json": {"value": "many"}}, 422, "validation-error"),
        (
            "PUT",
            "/things/a",
            {"content": b"[1,", "headers": {"content-type": "application/json"}},
            422,
            "validation-error",
        ),
        ("PUT", "/things/a", {"json": {"value": 1, "pad": "x" * 2000}}, 413, "payload-too-large"),
        ("GET", "/broken", {}, 500, "internal-error"),
        ("GET", "/database-down", {}, 503, "unavailable"),
    ],
)
async def test_every_error_is_a_problem_document(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    slug: str,
) -> None:
    response = await client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == status
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"] == f"urn:consentry:problem:{slug}"
    assert body["status"] == status
    assert body["title"]


async def test_unavailable_says_when_to_retry(client: httpx.AsyncClient) -> None:
    response = await client.get("/database-down")
    assert response.headers["retry-after"] == "1"


async def test_validation_errors_do_not_echo_the_input(client: httpx.AsyncClient) -> None:
    response = await client.put("/things/a", json={"value": "secret@example.com"})
    assert response.status_code == 422
    assert "secret@example.com" not in response.text
    assert response.json()["errors"][0]["location"] == ["body", "value"]


async def test_a_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"value": 1, "pad": "'
        for _ in range(10):
            yield b"x" * 200
        yield b'"}'

    response = await client.put(
        "/things/a", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    assert response.json()["type"] == "urn:consentry:problem:payload-too-large"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"X-API-Key": "wrong"}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic " + KEY}, 401),
        ({"Authorization": f"Bearer {KEY}"}, 200),
        ({"Authorization": f"bearer {KEY}"}, 200),
    ],
)
async def test_api_keys(headers: dict[str, str], status: int) -> None:
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.put("/things/a", json={"value": 1}, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["type"] == "urn:consentry:problem:unauthenticated"


async def test_a_key_without_the_scope_is_403() -> None:
    class ReadOnly(DevKeyResolver):
        async def resolve(self, key: str):  # type: ignore[no-untyped-def]
            principal = await super().resolve(key)
            return principal and type(principal)(
                principal.tenant_id, frozenset({"consent:read"}), "ro"
            )

    app = make_app()
    app.state.key_resolver = ReadOnly(KEY, TENANT)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.put("/things/a", json={"value": 1}, headers={"X-API-Key": KEY})
    assert response.status_code == 403
    assert response.json()["scope"] == "consent:write"


async def test_the_request_log_names_the_route_not_the_path(
    client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", "json")
    try:
        await client.put("/things/someone@example.com", json={"value": 1})
        lines = [
            json.loads(line)
            for line in capsys.readouterr().err.splitlines()
            if line.startswith("{")
        ]
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    (entry,) = [line for line in lines if line["event"] == "request"]
    assert entry["route"] == "/things/{thing_id}"
    assert entry["status"] == 200
    assert "someone@example.com" not in json.dumps(lines)
