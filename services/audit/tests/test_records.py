"""The appender's fast paths agree with the reference code they stand in for: `decode_record`
with `envelope.decode` (every record accepted alike, every poison refused for the same
reason), `entry_appended_envelopes` + `entry_appended_payload` with `outbox.columns`, the
entry's event time with `Timestamp.FromDatetime`."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from consentry.audit import records
from consentry.audit.chain import events
from consentry.audit.chain.service import entry_bytes
from consentry.audit.records import decode_record
from consentry.audit.v1 import audit_pb2
from consentry.eventing import outbox
from consentry.eventing.envelope import (
    MAX_EVENT_BYTES,
    PoisonMessage,
    ReceivedEvent,
    decode,
    encode,
)
from consentry.eventing.testing import consent_event

Headers = list[tuple[str, bytes | None]]
Wire = tuple[bytes | None, bytes | None, Headers]
TENANT = "6f1c1f3e-54c5-4a55-9c6f-0c4c8d3b2a10"
SUBJECT = "ab" * 32
OTHER_PAYLOAD = encode(consent_event(TENANT, "cd" * 32, 2)).value
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def wire(**changes: object) -> Wire:
    """A consent event as it is on the wire (`changes` replace Event fields)."""
    event = dataclasses.replace(consent_event(TENANT, SUBJECT, 2), **changes)  # type: ignore[arg-type]
    record = encode(event)
    return record.key, record.value, list(record.headers)


def outcome(decoder: Callable[..., ReceivedEvent], item: Wire) -> ReceivedEvent | str:
    try:
        return decoder(*item)
    except PoisonMessage as error:
        return f"poison {error.reason}"


def header(name: str, value: bytes | None) -> Callable[[Wire], Wire]:
    def change(item: Wire) -> Wire:
        key, payload, headers = item
        return key, payload, [(n, value if n == name else v) for n, v in headers]

    return change


def without(name: str) -> Callable[[Wire], Wire]:
    return lambda item: (item[0], item[1], [(n, v) for n, v in item[2] if n != name])


def plus(name: str, value: bytes | None) -> Callable[[Wire], Wire]:
    return lambda item: (item[0], item[1], [*item[2], (name, value)])


CHANGES: dict[str, Callable[[Wire], Wire]] = {
    "as encoded": lambda item: item,
    "no value": lambda item: (item[0], None, item[2]),
    "no key": lambda item: (None, item[1], item[2]),
    "key of another subject": lambda item: (f"{TENANT}/{'cd' * 32}".encode(), *item[1:]),
    "duplicate header": plus("ce_id", b"another"),
    "duplicate header, one None": plus("ce_type", None),
    "extra header": plus("traceparent", b"00-abc"),
    "extra None header": plus("traceparent", None),
    "uppercase extension": plus("ce_Other", b"x"),
    "invalid extension name": plus("ce_bad-name", b"x"),
    **{f"no {name}": without(name) for name in ("ce_id", "ce_time", "content-type")},
    "no ce_tenant": without("ce_tenant"),
    "None ce_id": header("ce_id", None),
    "empty ce_id": header("ce_id", b""),
    "empty ce_source": header("ce_source", b""),
    "empty ce_subject": header("ce_subject", b""),
    "not UTF-8": header("ce_source", b"\xff\xfe"),
    "content type with parameter": header("content-type", b"application/protobuf; x=y"),
    "json content type": header("content-type", b"application/json"),
    "spec version 0.3": header("ce_specversion", b"0.3"),
    "unknown type": header("ce_type", b"com.example.unknown"),
    "uppercase tenant": lambda item: header("ce_tenant", TENANT.upper().encode())(
        (f"{TENANT.upper()}/{SUBJECT}".encode(), *item[1:])
    ),
    "tenant without dashes": header("ce_tenant", TENANT.replace("-", "").encode()),
    "tenant not a UUID": header("ce_tenant", b"tenant-1"),
    "time +00:00": header("ce_time", b"2026-11-29T10:11:12.123456+00:00"),
    "time in milliseconds": header("ce_time", b"2026-11-29T10:11:12.123Z"),
    "time without fraction": header("ce_time", b"2026-11-29T10:11:12Z"),
    "time +02:00": header("ce_time", b"2026-11-29T12:11:12.123456+02:00"),
    "time without zone": header("ce_time", b"2026-11-29T10:11:12.123456"),
    "no such day": header("ce_time", b"2026-02-30T10:11:12.123456Z"),
    "hour 24": header("ce_time", b"2026-11-29T24:00:00Z"),
    "not a time": header("ce_time", b"yesterday"),
    "undecodable payload": lambda item: (item[0], b"\x08\xff\xff\xff", item[2]),
    "payload of another subject": lambda item: (item[0], OTHER_PAYLOAD, item[2]),
    "oversize": lambda item: (item[0], (item[1] or b"") + b"\x00" * MAX_EVENT_BYTES, item[2]),
    # CloudEvents Distributed Tracing: optional, and dropped (never poison) when at fault
    "traced": lambda _: wire(traceparent=TRACEPARENT),
    "traced with a tracestate": lambda _: wire(traceparent=TRACEPARENT, tracestate="congo=t61"),
    "traced, sampled flag 00": lambda _: wire(traceparent=TRACEPARENT[:-2] + "00"),
    "traceparent uppercase": plus("ce_traceparent", TRACEPARENT.upper().encode()),
    "traceparent with a space": plus("ce_traceparent", b" " + TRACEPARENT.encode()),
    "traceparent version 01 with more": plus("ce_traceparent", b"01" + TRACEPARENT[2:].encode()),
    "traceparent version 00 with more": plus("ce_traceparent", TRACEPARENT.encode() + b"-ab"),
    "traceparent of zero trace id": plus("ce_traceparent", f"00-{'0' * 32}-{'1' * 16}-01".encode()),
    "traceparent of zero span id": plus("ce_traceparent", f"00-{'1' * 32}-{'0' * 16}-01".encode()),
    "traceparent not UTF-8": plus("ce_traceparent", b"\xff\xfe"),
    "traceparent None": plus("ce_traceparent", None),
    "traceparent twice": lambda _: plus("ce_traceparent", TRACEPARENT.encode())(
        wire(traceparent=TRACEPARENT)
    ),
    "tracestate alone": plus("ce_tracestate", b"congo=t61"),
    "traced and a None tracestate": lambda _: plus("ce_tracestate", None)(
        wire(traceparent=TRACEPARENT)
    ),
}


@pytest.mark.parametrize("change", CHANGES.values(), ids=CHANGES.keys())
def test_decode_record_is_envelope_decode(change: Callable[[Wire], Wire]) -> None:
    item = change(wire())
    fast, reference = outcome(decode_record, item), outcome(decode, item)
    if not any(name == "ce_time" for name, _ in item[2]):  # both say "now": a little apart
        assert isinstance(fast, ReceivedEvent)
        assert isinstance(reference, ReceivedEvent)
        assert abs(fast.time - reference.time) < timedelta(seconds=5)
        fast = dataclasses.replace(fast, time=reference.time)
    assert fast == reference


def test_canonical_records_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    moments = [datetime(2026, 11, 29, 10, 11, 12, micro, tzinfo=UTC) for micro in (0, 1, 999999)]
    items = [wire(time=moment) for moment in moments]
    moments.append(moments[0])  # traced as OpenTelemetry writes it: fast too
    items.append(wire(time=moments[0], traceparent=TRACEPARENT))
    expected = [decode(*item) for item in items]

    def refuse(*_: object) -> ReceivedEvent:
        raise AssertionError("envelope.decode called for a canonical record")

    monkeypatch.setattr(records, "decode", refuse)
    for item, reference, moment in zip(items, expected, moments, strict=True):
        fast = decode_record(*item)
        assert fast == reference
        assert fast.time == moment
        assert fast.time.utcoffset() is not None
    assert decode_record(*items[-1]).traceparent == TRACEPARENT


def test_the_cases_are_mostly_poison() -> None:
    outcomes = {name: outcome(decode, change(wire())) for name, change in CHANGES.items()}
    refused = {name for name, result in outcomes.items() if isinstance(result, str)}
    assert "as encoded" not in refused
    assert len(refused) > 20


def test_entry_appended_envelopes_and_payloads_are_outbox_rows() -> None:
    moment = datetime(2026, 11, 29, 10, 11, 12, 345678, tzinfo=UTC)
    tenants = [str(uuid.uuid4()) for _ in range(3)]
    rows = [(str(uuid.uuid4()), tenants[n % 3], n + 1, bytes([n]) * 40) for n in range(7)]
    envelopes = events.entry_appended_envelopes([tenant for _, tenant, *_ in rows], moment)
    assert sorted(envelopes.slots.values()) == [1, 2, 3]  # one envelope per tenant
    leaf, chain = bytes(range(32)), bytes(range(32, 64))
    reference = outbox.columns(
        dataclasses.replace(
            events.entry_appended(tenant, seq, entry, leaf, chain), id=event_id, time=moment
        )
        for event_id, tenant, seq, entry in rows
    )
    assert reference[1] == [envelopes.topic] * len(rows)
    assert reference[2] == [envelopes.keys[envelopes.slots[t] - 1] for _, t, *_ in rows]
    assert reference[3] == [envelopes.event_type] * len(rows)
    assert [json.loads(h) for h in reference[4]] == [
        json.loads(envelopes.headers(tenant, event_id)) for event_id, tenant, *_ in rows
    ]
    assert reference[5] == [
        events.entry_appended_payload(tenant, seq, entry, leaf, chain)
        for _, tenant, seq, entry in rows
    ]


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 11, 29, 10, 11, 12, 345678, tzinfo=UTC),
        datetime(2026, 11, 29, 12, 11, 12, 0, tzinfo=timezone(timedelta(hours=2))),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 13, 59, 59, 999999, tzinfo=timezone(-timedelta(hours=5))),
        datetime(2026, 11, 29, 10, 11, 12, 1),  # naive: UTC
    ],
)
def test_entry_bytes_hold_the_event_time_as_timestamp_from_datetime(moment: datetime) -> None:
    event = dataclasses.replace(decode(*wire()), time=moment)
    expected = Timestamp()
    expected.FromDatetime(moment)
    assert audit_pb2.AuditEntry.FromString(entry_bytes(event)).event_time == expected


def test_entry_bytes_record_the_traceparent_and_leave_untraced_entries_as_they_were() -> None:
    same = {"id": str(uuid.uuid4()), "time": datetime(2026, 11, 29, 10, 11, 12, tzinfo=UTC)}
    traced = decode(*wire(traceparent=TRACEPARENT, tracestate="congo=t61", **same))
    untraced = decode(*wire(**same))
    entry = audit_pb2.AuditEntry.FromString(entry_bytes(traced))
    assert entry.traceparent == TRACEPARENT
    # the same event without a trace: exactly the bytes of an entry before field 10 existed
    assert entry_bytes(untraced) == entry_bytes(dataclasses.replace(traced, traceparent=None))
    entry.ClearField("traceparent")
    assert entry.SerializeToString(deterministic=True) == entry_bytes(untraced)
