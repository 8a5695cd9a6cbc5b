"""Settings of the consent service's processes (environment variables, `CONSENTRY_` prefix)."""

from __future__ import annotations

from consentry.eventing.settings import DatabaseSettings, KafkaSettings
from consentry.httpapi.service import ServiceApiSettings


class ApiSettings(ServiceApiSettings):
    """The consent HTTP API: its database, where it listens, and the dev API key."""


class RelaySettings(DatabaseSettings, KafkaSettings):
    """The consent outbox relay: its database and the broker."""

    relay_batch_size: int = 500
    relay_poll_interval: float = 1.0
    relay_retention_days: int = 7
