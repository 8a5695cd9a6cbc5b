"""Decoding the audited topics' records for the appender: `envelope.decode`, without its cost.

A record laid out exactly as `envelope.encode` writes it (the eight headers it writes, each
once, UTF-8, plus an optional `ce_traceparent` in OpenTelemetry's own version-00 form; content
type and spec version as written; a canonical lowercase tenant UUID; an RFC 3339 UTC time as
Python writes it; the key `<tenant>/<subject>`; a catalogued type whose payload parses and
passes its check) is decoded here without the CloudEvents SDK, about four times faster. A
record with a `ce_tracestate`, or a traceparent in any other form, takes the slow path: rare,
and `envelope.decode` is what says which of them to keep. Every other record, including
every record this path would refuse, goes to `envelope.decode`: what is accepted, what it
decodes to, and the reason a poison record is refused are `envelope.decode`'s (tested side by
side in tests/test_records.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

from google.protobuf.message import DecodeError

from consentry.eventing import tracing
from consentry.eventing.catalogue import lookup
from consentry.eventing.envelope import (
    CONTENT_TYPE,
    MAX_EVENT_BYTES,
    REQUIRED_HEADERS,
    SPECVERSION,
    ReceivedEvent,
    decode,
)

_HEADERS = frozenset((*REQUIRED_HEADERS, "ce_time", "content-type"))
_TRACED_HEADERS = _HEADERS | {tracing.TRACEPARENT_HEADER}
# A traceparent exactly as OpenTelemetry writes one (and reads back unchanged), ids not zero.
_TRACEPARENT = re.compile(
    rb"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}\Z", re.ASCII
)
_CONTENT_TYPE = CONTENT_TYPE.encode()
_SPECVERSION = SPECVERSION.encode()
# `str(uuid.UUID(text)) == text` exactly for these.
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# `datetime.isoformat()` of a UTC time with `Z`, as the SDK writes `ce_time`; for these
# `datetime.fromisoformat` and the SDK's `isoparse` agree (or both fail).
_UTC_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{6})?Z\Z", re.ASCII)


def decode_record(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> ReceivedEvent:
    """`envelope.decode(key, value, headers)`: the event, or `PoisonMessage` with its reason."""
    fields = dict(headers)
    traceparent = fields.get(tracing.TRACEPARENT_HEADER)
    if (
        key is None
        or value is None
        or len(value) > MAX_EVENT_BYTES
        or len(fields) != len(headers)
        or fields.keys() != (_HEADERS if traceparent is None else _TRACED_HEADERS)
        or fields["content-type"] != _CONTENT_TYPE
        or fields["ce_specversion"] != _SPECVERSION
        or (traceparent is not None and _TRACEPARENT.match(traceparent) is None)
    ):
        return decode(key, value, headers)
    try:
        event_id = fields["ce_id"].decode()  # type: ignore[union-attr]
        source = fields["ce_source"].decode()  # type: ignore[union-attr]
        subject_ref = fields["ce_subject"].decode()  # type: ignore[union-attr]
        tenant_id = fields["ce_tenant"].decode()  # type: ignore[union-attr]
        time = fields["ce_time"].decode()  # type: ignore[union-attr]
        event_type = lookup(fields["ce_type"].decode())  # type: ignore[union-attr]
    except (AttributeError, UnicodeDecodeError):  # a None value, or not UTF-8
        return decode(key, value, headers)
    if (
        event_type is None
        or not event_id
        or not source
        or not subject_ref
        or _CANONICAL_UUID.match(tenant_id) is None
        or _UTC_TIME.match(time) is None
        or key != f"{tenant_id}/{subject_ref}".encode()
    ):
        return decode(key, value, headers)
    message = event_type.message()
    try:
        moment = datetime.fromisoformat(time)
        message.ParseFromString(value)
    except (ValueError, DecodeError):
        return decode(key, value, headers)
    if event_type.check(message, tenant_id, subject_ref):
        return decode(key, value, headers)
    return ReceivedEvent(
        id=event_id,
        type=event_type,
        source=source,
        tenant_id=tenant_id,
        subject_ref=subject_ref,
        time=moment,
        data=value,
        message=message,
        key=key,
        traceparent=None if traceparent is None else traceparent.decode(),
    )
