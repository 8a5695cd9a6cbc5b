"""aiokafka clients built from settings, with the options every consentry process shares."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consentry.eventing.settings import KafkaSettings


def producer(settings: KafkaSettings, client_suffix: str = "") -> AIOKafkaProducer:
    """A producer with `acks=all`; idempotence only where the broker supports it."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}{client_suffix}",
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        compression_type=settings.kafka_compression,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        linger_ms=5,
    )


def consumer(settings: KafkaSettings, group_id: str, *topics: str) -> AIOKafkaConsumer:
    """A consumer that commits offsets only when told and starts from the earliest offset.

    `auto_offset_reset="earliest"` is deliberate: the development broker answers `latest`
    wrongly, and a new consumer group must see everything anyway (idempotent consumers).
    """
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-{group_id}",
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_uncommitted",
        max_poll_records=500,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        fetch_min_bytes=settings.kafka_fetch_min_bytes,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 3),
    )
