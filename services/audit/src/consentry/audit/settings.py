"""Settings of the audit service's processes (environment variables, `CONSENTRY_` prefix)."""

from __future__ import annotations

from consentry.eventing.settings import DatabaseSettings, KafkaSettings
from consentry.httpapi.service import ServiceApiSettings


class ApiSettings(ServiceApiSettings):
    """The audit HTTP API."""


class AppenderSettings(DatabaseSettings, KafkaSettings):
    """The audit appender: consumes every event topic and appends to the chain."""

    appender_group_id: str = "audit-appender"


class DatabaseOnlySettings(DatabaseSettings):
    """The command-line verifier."""
