"""Settings name the missing variable; logs redact personal data."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from consentry.eventing import kafka
from consentry.eventing.logs import configure_logging, get_logger
from consentry.eventing.settings import (
    DatabaseSettings,
    KafkaSettings,
    SettingsError,
    load_settings,
)
from consentry.eventing.topics import dead_letter_topic


class _Both(DatabaseSettings, KafkaSettings):
    pass


def test_missing_settings_name_their_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSENTRY_DATABASE_URL", raising=False)
    monkeypatch.delenv("CONSENTRY_KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SettingsError) as caught:
        load_settings(_Both)
    assert "CONSENTRY_DATABASE_URL" in str(caught.value)
    assert "CONSENTRY_KAFKA_BOOTSTRAP_SERVERS" in str(caught.value)


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTRY_DATABASE_URL", "postgresql://x@127.0.0.1/db")
    monkeypatch.setenv("CONSENTRY_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    settings = load_settings(_Both)
    assert settings.database_url == "postgresql://x@127.0.0.1/db"
    assert settings.kafka_enable_idempotence is False  # the dev broker lacks it


async def test_fetches_default_to_apache_kafkas_settings_and_reach_the_consumer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """500 ms / 1 byte unless set (the embedded broker's clients set their own pair,
    `consentry.devstack.broker.TANSU_CLIENT_ENV`); what is set is what the consumer asks."""
    monkeypatch.delenv("CONSENTRY_KAFKA_FETCH_MAX_WAIT_MS", raising=False)
    monkeypatch.delenv("CONSENTRY_KAFKA_FETCH_MIN_BYTES", raising=False)
    default = KafkaSettings(kafka_bootstrap_servers="127.0.0.1:9092")
    assert (default.kafka_fetch_max_wait_ms, default.kafka_fetch_min_bytes) == (500, 1)

    monkeypatch.setenv("CONSENTRY_KAFKA_FETCH_MAX_WAIT_MS", "200")
    monkeypatch.setenv("CONSENTRY_KAFKA_FETCH_MIN_BYTES", "65536")
    consumer = kafka.consumer(KafkaSettings(kafka_bootstrap_servers="127.0.0.1:9092"), "g", "t")
    try:
        assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (200, 65536)
    finally:
        await consumer.stop()  # never started: closes it without a broker


def test_logs_redact_personal_data_keys(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json")
    try:
        get_logger("test").info("hello", email="someone@example.com", subject_ref="abc")
        line = capsys.readouterr().err.strip().splitlines()[-1]
        record = json.loads(line)
        assert record["email"] == "[redacted]"
        assert record["subject_ref"] == "abc"
        assert "someone@example.com" not in line
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()


def test_dead_letter_topic_names() -> None:
    assert dead_letter_topic("audit-appender") == "consentry.dlq.audit-appender"
    with pytest.raises(ValueError, match="invalid consumer name"):
        dead_letter_topic("Bad Name")
