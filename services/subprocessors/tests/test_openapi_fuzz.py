"""The subprocessors API under schemathesis (no 5xx, every answer as documented) and mass
assignment of server-owned fields."""

from __future__ import annotations

import asyncpg
import httpx

from consentry.httpapi.testing import fuzz_openapi, mass_assignment_failures
from consentry.subprocessors.app import create_app
from consentry.subprocessors.settings import ApiSettings

from .conftest import API_KEY

# A recipient's signed acknowledgement: no API key, the signature over the exact body is the
# authorisation, and members other than the ids are ignored by contract (docs/webhooks.md).
ACKNOWLEDGEMENT = "POST /v1/acknowledgements"


def test_every_operation_answers_as_documented(api_settings: ApiSettings) -> None:
    failures = fuzz_openapi(
        create_app(api_settings),
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert not failures, "\n\n".join(failures)


async def test_server_owned_fields_are_refused(
    client: httpx.AsyncClient, db: asyncpg.Connection
) -> None:
    probes, failures = await mass_assignment_failures(client, db, exclude=[ACKNOWLEDGEMENT])
    assert len(probes) >= 2  # every JSON write body of the API
    assert not failures, "\n".join(failures)
