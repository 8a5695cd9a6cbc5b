"""`consentry tail TOPIC`: print a topic's records as JSON lines, decoded as the consumers
decode them (`consentry.eventing.envelope.decode`: CloudEvents binary-mode headers, the
catalogued protobuf payload and its checks); a record they would dead-letter is printed with
its reason instead.

No consumer group: the partitions are assigned and positioned explicitly (their end, or with
`--from-beginning` their start), because the development broker's `auto_offset_reset=latest`
is broken (docs/adr/0002-development-broker.md) and a tail should not join or commit anything.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from google.protobuf.json_format import MessageToDict

from consentry.cli.config import load, state
from consentry.cli.output import CliError, ExitCode, Output, handle_errors
from consentry.eventing.envelope import PoisonMessage, decode
from consentry.eventing.settings import KafkaSettings


def record_document(record: ConsumerRecord[bytes, bytes]) -> dict[str, Any]:
    """A record as a JSON-able document: where it is, its CloudEvent attributes and payload."""
    where: dict[str, Any] = {
        "topic": record.topic,
        "partition": record.partition,
        "offset": record.offset,
    }
    try:
        event = decode(record.key, record.value, list(record.headers or ()))
    except PoisonMessage as exc:
        key = base64.b64encode(record.key).decode() if record.key is not None else None
        return {
            **where,
            "poison": exc.args[0],
            "detail": " ".join(map(str, exc.args[1:])),
            "key_base64": key,
        }
    return {
        **where,
        "id": event.id,
        "type": event.type.name,
        "source": event.source,
        "tenant": event.tenant_id,
        "subject": event.subject_ref,
        "time": event.time.isoformat(),
        "data": MessageToDict(event.message, preserving_proto_field_name=True),
    }


async def _tail(
    bootstrap: str,
    topic: str,
    output: Output,
    *,
    from_beginning: bool,
    limit: int | None,
    idle: float | None,
) -> int:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    shown = 0
    try:
        if topic not in await consumer.topics():
            raise CliError(f"no topic {topic!r} on {bootstrap}", ExitCode.USAGE)
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        if from_beginning:
            await consumer.seek_to_beginning(*partitions)
        else:
            for partition, offset in (await consumer.end_offsets(partitions)).items():
                consumer.seek(partition, offset)
        last = time.monotonic()
        while limit is None or shown < limit:
            batches = await consumer.getmany(timeout_ms=200)
            records = sorted(
                (record for batch in batches.values() for record in batch),
                key=lambda record: record.timestamp,
            )
            if records:
                last = time.monotonic()
            elif idle is not None and time.monotonic() - last >= idle:
                break
            for record in records[: None if limit is None else limit - shown]:
                output.json_line(record_document(record))
                shown += 1
    finally:
        await consumer.stop()
    return shown


@handle_errors
def tail(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="e.g. consentry.consent.v1")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="from the oldest retained record")
    ] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="stop after N records")
    ] = None,
    idle: Annotated[
        float | None,
        typer.Option("--idle-exit", min=0.1, help="stop after this many seconds without a record"),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            "--bootstrap-servers",
            help="the broker (default: CONSENTRY_KAFKA_BOOTSTRAP_SERVERS)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a topic's records decoded as CloudEvents, one JSON line each (Ctrl-C stops)."""
    output = state(ctx, as_json=True).output
    overrides = {"kafka_bootstrap_servers": bootstrap} if bootstrap else {}
    settings = load(KafkaSettings, **overrides)
    try:
        shown = asyncio.run(
            _tail(
                settings.kafka_bootstrap_servers,
                topic,
                output,
                from_beginning=from_beginning,
                limit=limit,
                idle=idle,
            )
        )
    except KeyboardInterrupt:
        return
    output.note(f"{shown} record(s)")
