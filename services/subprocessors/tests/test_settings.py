"""Settings: the development master key only in development and test; a bad key names its
variable; the notices' acknowledgement URL."""

from __future__ import annotations

import base64
import secrets

import pytest

from consentry.eventing.settings import SettingsError, load_settings
from consentry.subprocessors.settings import ApiSettings, NotifierSettings

DB = "postgresql://127.0.0.1/none"


def test_the_development_master_key_is_refused_in_production() -> None:
    with pytest.raises(SettingsError, match="CONSENTRY_SUBPROCESSORS_MASTER_KEY"):
        load_settings(ApiSettings, database_url=DB, environment="production")
    for environment in ("development", "test"):
        load_settings(ApiSettings, database_url=DB, environment=environment)
    strong = base64.b64encode(secrets.token_bytes(32)).decode()
    load_settings(
        ApiSettings, database_url=DB, environment="production", subprocessors_master_key=strong
    )


def test_a_malformed_master_key_is_refused() -> None:
    for bad in ("not base64!", base64.b64encode(b"short").decode()):
        with pytest.raises(SettingsError, match="CONSENTRY_SUBPROCESSORS_MASTER_KEY"):
            load_settings(
                ApiSettings, database_url=DB, environment="test", subprocessors_master_key=bad
            )


def test_ack_url_and_lease() -> None:
    settings = load_settings(
        NotifierSettings,
        database_url=DB,
        kafka_bootstrap_servers="127.0.0.1:9092",
        environment="test",
        public_url="https://subprocessors.example.com/",
        webhook_timeout_seconds=10,
    )
    assert settings.ack_url == "https://subprocessors.example.com/v1/acknowledgements"
    assert settings.lease_seconds > settings.webhook_timeout_seconds
