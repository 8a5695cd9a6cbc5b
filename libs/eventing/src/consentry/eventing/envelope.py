"""CloudEvents in Kafka binary mode with protobuf payloads.

On the wire every event is a Kafka record whose value is the protobuf message and whose
headers carry the CloudEvents attributes (`ce_id`, `ce_type`, `ce_source`,
`ce_specversion`, `ce_time`, `ce_subject`, the extension `ce_tenant`) and
`content-type: application/protobuf`. The key is `<tenant>/<subject ref>`, so every event of
one subject lands on one partition, in order. Any CloudEvents SDK and any protobuf decoder can
read our topics without our code; we use the `cloudevents` SDK's Kafka binding to build and
parse the headers.

Traces: an event may carry the CloudEvents Distributed Tracing extension, `ce_traceparent`
and `ce_tracestate` (W3C Trace Context, `consentry.eventing.tracing`). An `Event` built
without one takes the current OpenTelemetry context's trace, so whatever a service publishes
while it handles a traced request or event continues that trace with no code of its own.
`decode` reads them as optional headers: a malformed or repeated one is dropped (the event
is then untraced), never poison.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from cloudevents.core.base import BaseCloudEvent
from cloudevents.core.bindings import kafka as ce_kafka
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.v1.event import CloudEvent
from google.protobuf.message import DecodeError, Message
from google.protobuf.timestamp_pb2 import Timestamp

from consentry.eventing import tracing
from consentry.eventing.catalogue import EventType, lookup

CONTENT_TYPE = "application/protobuf"
SPECVERSION = "1.0"
TENANT_EXTENSION = "tenant"
REQUIRED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_specversion", "ce_tenant", "ce_subject")
# The largest event payload a consumer accepts; a larger record is poison (`oversize`), so
# that a producer's mistake cannot make a consumer hold a huge message or fail the partition.
# Below Apache Kafka's default message.max.bytes (1 MiB) and aiokafka's default fetch size.
MAX_EVENT_BYTES = 512 * 1024
# Optional headers read apart from the CloudEvents SDK: at fault, they are dropped, not poison.
TRACE_HEADERS = (tracing.TRACEPARENT_HEADER, tracing.TRACESTATE_HEADER)


class PoisonMessage(ValueError):  # noqa: N818 - the domain's own word for it
    """A record that can never be processed; it belongs on the dead-letter topic."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class _ProtobufFormat:
    """A cloudevents `Format` whose data is already-serialised protobuf bytes."""

    def read(self, event_factory: Any, data: str | bytes) -> BaseCloudEvent:
        raise NotImplementedError("structured mode is not used on consentry topics")

    def write(self, event: BaseCloudEvent) -> bytes:
        raise NotImplementedError("structured mode is not used on consentry topics")

    def write_data(self, data: Any, datacontenttype: str | None) -> bytes:
        if not isinstance(data, bytes):
            raise TypeError("protobuf event data must be bytes")
        return data

    def read_data(self, body: bytes, datacontenttype: str | None) -> bytes:
        return body

    def get_content_type(self) -> str:
        return CONTENT_TYPE


_FORMAT = _ProtobufFormat()


_Fallback = TypeVar("_Fallback", datetime, None)


def to_timestamp(moment: datetime) -> Timestamp:
    """The protobuf `Timestamp` of an aware instant (for event payloads)."""
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def field_time(message: Message, name: str, fallback: _Fallback) -> datetime | _Fallback:
    """The instant in a received payload's timestamp field `name`: `fallback` (usually the
    event's own time) when the field is not set; a value out of datetime's range is poison
    (`schema-violation`), never a crash retried for ever."""
    if not message.HasField(name):
        return fallback
    stamp: Timestamp = getattr(message, name)
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise PoisonMessage("schema-violation", f"{name} is out of range") from None


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Event:
    """An event to publish: a catalogued type, its protobuf message and its subject.

    `traceparent` / `tracestate` (W3C, version-00 form): the trace the event continues. Left
    out, they are the current OpenTelemetry context's when the event is built (none outside
    a trace): the context of the code deciding to publish, which is where the cause is, not
    of whichever task later encodes or relays it.
    """

    type: EventType
    tenant_id: str
    subject_ref: str
    message: Message
    source: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: datetime = field(default_factory=utcnow)
    traceparent: str | None = None
    tracestate: str | None = None

    def __post_init__(self) -> None:
        if self.traceparent is None:
            headers = tracing.current()
            if headers is not None:
                object.__setattr__(self, "traceparent", headers.traceparent)
                object.__setattr__(self, "tracestate", headers.tracestate)

    @property
    def key(self) -> bytes:
        """Kafka key: `<tenant>/<subject ref>`, so one subject's events share a partition."""
        return f"{self.tenant_id}/{self.subject_ref}".encode()


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    """What goes on (or came off) a topic: topic, key, value and headers."""

    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def encode(event: Event) -> KafkaRecord:
    """Encode an event as a CloudEvents binary-mode Kafka record."""
    if not isinstance(event.message, event.type.message):
        raise TypeError(f"{event.type.name} carries {event.type.message.__name__}")
    attributes: dict[str, Any] = {
        "id": event.id,
        "type": event.type.name,
        "source": event.source,
        "specversion": SPECVERSION,
        "time": event.time.astimezone(UTC),
        "subject": event.subject_ref,
        "datacontenttype": CONTENT_TYPE,
        TENANT_EXTENSION: event.tenant_id,
    }
    if event.traceparent:
        attributes[tracing.TRACEPARENT] = event.traceparent
        if event.tracestate:
            attributes[tracing.TRACESTATE] = event.tracestate
    cloud_event = CloudEvent(
        attributes=attributes, data=event.message.SerializeToString(deterministic=True)
    )
    message = ce_kafka.to_binary(cloud_event, _FORMAT, key_mapper=lambda _: event.key)
    key = message.key.encode() if isinstance(message.key, str) else message.key
    return KafkaRecord(
        topic=event.type.topic,
        key=key,
        value=message.value,
        headers=tuple(sorted(message.headers.items())),
    )


@dataclass(frozen=True, slots=True)
class ReceivedEvent:
    """An event read from a topic, its attributes checked and its payload decoded."""

    id: str
    type: EventType
    source: str
    tenant_id: str
    subject_ref: str
    time: datetime
    data: bytes
    message: Message
    key: bytes | None
    traceparent: str | None = None
    tracestate: str | None = None


def _trace_of(headers: Sequence[tuple[str, bytes | None]]) -> tracing.TraceHeaders | None:
    """The record's trace headers as OpenTelemetry reads them; None if absent, repeated,
    not UTF-8 or malformed (the event is then simply untraced)."""
    found: dict[str, list[bytes | None]] = {}
    for name, value in headers:
        if name in TRACE_HEADERS:
            found.setdefault(name, []).append(value)
    parents = found.get(tracing.TRACEPARENT_HEADER, [])
    states = found.get(tracing.TRACESTATE_HEADER, [])
    if len(parents) != 1 or parents[0] is None or len(states) > 1:
        return None
    try:
        traceparent = parents[0].decode()
        tracestate = states[0].decode() if states and states[0] is not None else None
    except UnicodeDecodeError:
        return None
    return tracing.parse(traceparent, tracestate)


def _headers_dict(headers: Sequence[tuple[str, bytes | None]]) -> dict[str, bytes]:
    result: dict[str, bytes] = {}
    for name, value in headers:
        if value is None:
            continue
        if name in result:
            raise PoisonMessage("duplicate-header", name)
        result[name] = value
    return result


def decode(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> ReceivedEvent:
    """Decode a binary-mode record; raise `PoisonMessage` with a reason if it is unusable."""
    if value is None:
        raise PoisonMessage("no-value")
    if len(value) > MAX_EVENT_BYTES:
        raise PoisonMessage("oversize", f"{len(value)} bytes > {MAX_EVENT_BYTES}")
    trace = _trace_of(headers)
    try:
        header_map = _headers_dict([item for item in headers if item[0] not in TRACE_HEADERS])
        missing = [name for name in REQUIRED_HEADERS if name not in header_map]
        if missing:
            raise PoisonMessage("missing-headers", ",".join(missing))
        content_type = header_map.get("content-type", b"").decode()
        if content_type.split(";")[0].strip() != CONTENT_TYPE:
            raise PoisonMessage("wrong-content-type", content_type or "(none)")
        specversion = header_map["ce_specversion"]
        if specversion != SPECVERSION.encode():
            raise PoisonMessage(
                "unsupported-specversion", specversion.decode(errors="replace")[:20]
            )
        cloud_event = ce_kafka.from_binary(
            ce_kafka.KafkaMessage(headers=header_map, key=key, value=value), _FORMAT, CloudEvent
        )
    except PoisonMessage:
        raise
    except (BaseCloudEventException, ValueError, TypeError) as exc:  # incl. UnicodeDecodeError
        raise PoisonMessage("invalid-cloudevent", str(exc)[:200]) from None
    event_type = lookup(cloud_event.get_type())
    if event_type is None:
        raise PoisonMessage("unknown-type", cloud_event.get_type()[:200])
    tenant_id = str(cloud_event.get_extension(TENANT_EXTENSION))
    try:
        tenant_id = str(uuid.UUID(tenant_id))
    except ValueError:
        raise PoisonMessage("invalid-tenant", "ce_tenant is not a UUID") from None
    subject_ref = cloud_event.get_subject() or ""
    expected_key = f"{tenant_id}/{subject_ref}".encode()
    if key != expected_key:
        raise PoisonMessage("key-mismatch", "key is not <ce_tenant>/<ce_subject>")
    message = event_type.message()
    try:
        message.ParseFromString(value)
    except DecodeError as exc:
        raise PoisonMessage("undecodable-payload", str(exc)[:200]) from None
    problem = event_type.check(message, tenant_id, subject_ref)
    if problem:
        raise PoisonMessage("schema-violation", problem)
    return ReceivedEvent(
        id=cloud_event.get_id(),
        type=event_type,
        source=cloud_event.get_source(),
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        time=cloud_event.get_time() or utcnow(),
        data=value,
        message=message,
        key=key,
        traceparent=trace.traceparent if trace else None,
        tracestate=trace.tracestate if trace else None,
    )


def named_type(headers: Sequence[tuple[str, bytes | None]]) -> EventType | None:
    """The catalogue type a record's `ce_type` header names, read without decoding the
    record; None when the header is absent, repeated, not UTF-8 or names no known type
    (then only `decode` can say what is wrong with the record)."""
    found: bytes | None = None
    for name, value in headers:
        if name == "ce_type":
            if found is not None or value is None:
                return None
            found = value
    if found is None:
        return None
    try:
        return lookup(found.decode())
    except UnicodeDecodeError:
        return None


def not_for(accepts: Collection[str], headers: Sequence[tuple[str, bytes | None]]) -> bool:
    """Whether a consumer of the event types named `accepts` may pass over a record unread:
    its headers name another known type. A consumer neither decodes nor claims nor
    dead-letters an event that is not its business; a record whose type cannot be told
    from its headers is decoded (and is poison if it is unusable)."""
    event_type = named_type(headers)
    return event_type is not None and event_type.name not in accepts


def header_text(headers: Mapping[str, bytes], name: str) -> str:
    """A header's value as text ('' when absent)."""
    return headers.get(name, b"").decode("utf-8", errors="replace")
