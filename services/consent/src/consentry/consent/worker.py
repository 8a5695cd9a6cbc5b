"""The consent service's outbox relay process."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from consentry.consent.settings import RelaySettings
from consentry.eventing import kafka
from consentry.eventing.relay import OutboxRelay, RelayOptions


async def run_relay(settings: RelaySettings, stop: asyncio.Event) -> None:
    """Publish the consent outbox until `stop` is set."""
    producer = kafka.producer(settings, "-consent-relay")
    await producer.start()
    try:
        options = RelayOptions(
            batch_size=settings.relay_batch_size,
            poll_interval=settings.relay_poll_interval,
            retention=timedelta(days=settings.relay_retention_days),
        )
        await OutboxRelay(settings.database_url, producer, options).run(stop)
    finally:
        await producer.stop()
