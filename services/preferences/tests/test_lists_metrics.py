"""The list processor's metrics, scraped over HTTP from the real process as Prometheus does:
propagation once a batch commits, and its dead letters."""

from __future__ import annotations

import secrets
import socket
import uuid
from pathlib import Path

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consentry.eventing import topics
from consentry.eventing.envelope import KafkaRecord

from .test_lists_helpers import (
    Processor,
    consent,
    ensure_topics,
    eventually,
    new_ref,
    new_topic,
    processor_env,
    produce,
    unsubscribed,
)

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def scrape(url: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` whose labels include `labels` (0 when none)."""
    try:
        async with httpx.AsyncClient() as client:
            response = await client.get(url)
    except httpx.TransportError:
        return 0.0  # not serving yet
    response.raise_for_status()
    return sum(
        sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_propagation_and_dead_letters_are_exported(
    db: asyncpg.Connection, app_dsn: str, kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"lp-{secrets.token_hex(4)}"
    await ensure_topics(kafka_bootstrap, topics.dead_letter_topic(name))
    port = free_port()
    env = processor_env(app_dsn, kafka_bootstrap, name) | {
        "CONSENTRY_METRICS_PORT": str(port),
        "CONSENTRY_METRICS_HOST": "127.0.0.1",
    }
    url = f"http://127.0.0.1:{port}/metrics"
    proc = Processor(env, tmp_path / "processor.log")
    proc.start()
    try:
        tenant, topic, ref = uuid.uuid4(), new_topic(), new_ref()
        garbage = KafkaRecord(topics.PREFERENCES, f"{tenant}/{ref}".encode(), b"\x00junk", ())
        await produce(
            kafka_bootstrap,
            [
                consent(tenant, ref, 1, given=True),
                garbage,
                unsubscribed(tenant, ref, 1, topic, ["email"]),
            ],
        )
        count = "consentry_propagation_seconds_count"
        # Other tests' events on the shared topics are applied too (a new group reads from
        # the start): at least ours are counted, under this processor's name.
        assert await eventually(
            lambda: scrape(url, count, kind="consent", consumer=name), lambda n: n >= 1
        )
        assert await eventually(
            lambda: scrape(url, count, kind="unsubscribe", consumer=name), lambda n: n >= 1
        )
        assert await eventually(
            lambda: scrape(
                url, "consentry_dead_letters_total", consumer=name, reason="missing-headers"
            ),
            lambda n: n >= 1,
        )
        assert proc.alive()
    finally:
        code = proc.stop()
        assert code in (0, None), proc.log.read_text()[-3000:]
