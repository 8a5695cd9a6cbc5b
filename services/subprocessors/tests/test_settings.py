"""Settings: the development master key only in development and test; a bad key names its
variable; the notices' acknowledgement URL; the notifier's own fetch wait."""

from __future__ import annotations

import asyncio
import base64
import secrets
from pathlib import Path
from typing import cast

import pytest

from consentry.eventing.settings import SettingsError, load_settings
from consentry.subprocessors.notifier.worker import NoticeProcessor, build_app
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


def test_the_notifier_fetches_with_its_own_wait_when_set(tmp_path: Path) -> None:
    """`CONSENTRY_NOTIFIER_FETCH_MAX_WAIT_MS` sets the fetch wait of the notifier's faust
    consumer (the one broker hop before the webhooks); unset, it is every consumer's."""
    common = {
        "database_url": DB,
        "kafka_bootstrap_servers": "127.0.0.1:9092",
        "environment": "test",
        "kafka_fetch_max_wait_ms": 200,
        "kafka_fetch_min_bytes": 65536,
    }
    waits = []
    for own in (None, 50):
        settings = load_settings(NotifierSettings, **common, notifier_fetch_max_wait_ms=own)
        processor = cast(NoticeProcessor, None)  # not called: the app is built, not started
        app = build_app(settings, processor, asyncio.Event(), str(tmp_path), [])
        waits.append((app.fetch_max_wait_ms, app.fetch_min_bytes))
    assert waits == [(200, 65536), (50, 65536)]
