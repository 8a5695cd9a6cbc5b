"""The preferences API under schemathesis (no 5xx, every answer as documented) and mass
assignment of server-owned fields."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from consentry.httpapi.testing import fuzz_openapi, mass_assignment_failures
from consentry.preferences.app import create_app
from consentry.preferences.settings import ApiSettings

from .conftest import API_KEY


def test_every_operation_answers_as_documented(
    api_settings: ApiSettings, tenant: uuid.UUID
) -> None:
    failures = fuzz_openapi(
        create_app(api_settings), headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert not failures, "\n\n".join(failures)


async def test_server_owned_fields_are_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    probes, failures = await mass_assignment_failures(client, db)
    assert len(probes) >= 7  # every JSON write body of the API
    assert not failures, "\n".join(failures)
