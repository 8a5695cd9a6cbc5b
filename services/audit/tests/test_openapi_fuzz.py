"""The audit API under schemathesis (no 5xx, every answer as documented) and mass assignment."""

from __future__ import annotations

import uuid

from consentry.audit.app import create_app
from consentry.audit.settings import ApiSettings
from consentry.httpapi.testing import fuzz_openapi

KEY = "audit-fuzz-key-0123456789abcdef"


def test_every_operation_answers_as_documented(audit_db: str) -> None:
    settings = ApiSettings(
        database_url=audit_db, environment="test", dev_api_key=KEY, dev_tenant_id=uuid.uuid4()
    )
    failures = fuzz_openapi(create_app(settings), headers={"X-API-Key": KEY})
    assert not failures, "\n\n".join(failures)
