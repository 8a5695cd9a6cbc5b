"""Settings of the consent service's processes (environment variables, `CONSENTRY_` prefix)."""

from __future__ import annotations

from consentry.httpapi.service import ServiceApiSettings


class ApiSettings(ServiceApiSettings):
    """The consent HTTP API: its database, where it listens, and the dev API key."""
