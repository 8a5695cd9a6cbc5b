"""CloudEvents binary-mode encoding and decoding, including every kind of poison."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from consentry.consent.v1 import consent_pb2
from consentry.eventing import catalogue, envelope
from consentry.eventing.envelope import (
    MAX_EVENT_BYTES,
    Event,
    KafkaRecord,
    PoisonMessage,
    decode,
    encode,
    field_time,
    to_timestamp,
)

TENANT = "00000000-0000-4000-8000-0000000000aa"
SUBJECT = "ab" * 32


def make_event(**decision_overrides: object) -> Event:
    fields: dict[str, object] = {
        "tenant_id": TENANT,
        "subject_ref": SUBJECT,
        "purpose": "performance",
        "policy_version": "2026-01",
        "subject_version": 3,
        "method": consent_pb2.CONSENT_METHOD_BANNER,
        **decision_overrides,
    }
    decision = consent_pb2.ConsentDecision(**fields)  # type: ignore[arg-type]
    return Event(
        type=catalogue.CONSENT_GIVEN,
        tenant_id=TENANT,
        subject_ref=SUBJECT,
        message=consent_pb2.ConsentGiven(decision=decision),
        source="/consentry/consent",
        time=datetime(2026, 11, 29, 8, 0, 0, 123456, tzinfo=UTC),
    )


def headers_of(record: KafkaRecord) -> dict[str, bytes]:
    return dict(record.headers)


def test_encode_sets_cloudevents_binary_mode_headers_and_key() -> None:
    event = make_event()
    record = encode(event)
    headers = headers_of(record)
    assert record.topic == "consentry.consent.v1"
    assert record.key == f"{TENANT}/{SUBJECT}".encode()
    assert headers["ce_id"] == event.id.encode()
    assert headers["ce_type"] == b"consentry.consent.given.v1"
    assert headers["ce_source"] == b"/consentry/consent"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_subject"] == SUBJECT.encode()
    assert headers["ce_tenant"] == TENANT.encode()
    assert headers["ce_time"] == b"2026-11-29T08:00:00.123456Z"
    assert headers["content-type"] == b"application/protobuf"


def test_value_is_the_plain_protobuf_message() -> None:
    """Any protobuf decoder reads the value without our code."""
    record = encode(make_event())
    parsed = consent_pb2.ConsentGiven.FromString(record.value)
    assert parsed.decision.purpose == "performance"
    assert parsed.decision.subject_version == 3


def test_decode_round_trips() -> None:
    event = make_event()
    record = encode(event)
    received = decode(record.key, record.value, list(record.headers))
    assert received.id == event.id
    assert received.type is catalogue.CONSENT_GIVEN
    assert received.tenant_id == TENANT
    assert received.subject_ref == SUBJECT
    assert received.time == event.time
    assert received.message == event.message
    assert received.data == record.value


def test_encode_refuses_a_message_of_another_type() -> None:
    event = make_event()
    wrong = Event(
        type=catalogue.CONSENT_WITHDRAWN,
        tenant_id=TENANT,
        subject_ref=SUBJECT,
        message=event.message,
        source="/consentry/consent",
    )
    with pytest.raises(TypeError, match="ConsentWithdrawn"):
        encode(wrong)


def _replace(
    headers: tuple[tuple[str, bytes], ...], name: str, value: bytes | None
) -> list[tuple[str, bytes | None]]:
    kept: list[tuple[str, bytes | None]] = [(n, v) for n, v in headers if n != name]
    if value is not None:
        kept.append((name, value))
    return kept


def _padded(value: bytes | None) -> bytes:
    """`value` plus an unknown length-delimited field (number 1000) past MAX_EVENT_BYTES."""
    size = MAX_EVENT_BYTES
    length, varint = size, bytearray()
    while length >= 0x80:
        varint.append(length & 0x7F | 0x80)
        length >>= 7
    varint.append(length)
    tag = bytes([0xC2, 0x3E])  # field 1000, wire type 2
    return (value or b"") + tag + bytes(varint) + b"x" * size


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: (r.key, None, list(r.headers)), "no-value"),
        (lambda r: (r.key, r.value, _replace(r.headers, "ce_id", None)), "missing-headers"),
        (lambda r: (r.key, r.value, _replace(r.headers, "ce_tenant", None)), "missing-headers"),
        (
            lambda r: (r.key, r.value, _replace(r.headers, "content-type", b"application/json")),
            "wrong-content-type",
        ),
        (
            lambda r: (r.key, r.value, _replace(r.headers, "ce_type", b"com.example.nope")),
            "unknown-type",
        ),
        (
            lambda r: (r.key, r.value, _replace(r.headers, "ce_specversion", b"0.3")),
            "unsupported-specversion",
        ),
        (
            lambda r: (r.key, r.value, _replace(r.headers, "ce_time", b"yesterday")),
            "invalid-cloudevent",
        ),
        (lambda r: (b"other/key", r.value, list(r.headers)), "key-mismatch"),
        (lambda r: (r.key, b"\xff\xff\xff\xff", list(r.headers)), "undecodable-payload"),
        (lambda r: (r.key, b"", list(r.headers)), "schema-violation"),
        # A valid payload padded with an unknown field (protobuf would parse it) past the limit
        (lambda r: (r.key, _padded(r.value), list(r.headers)), "oversize"),
        (lambda r: (r.key, r.value, [*r.headers, ("ce_id", b"again")]), "duplicate-header"),
        (
            lambda r: (f"t/{SUBJECT}".encode(), r.value, _replace(r.headers, "ce_tenant", b"t")),
            "invalid-tenant",
        ),
        (
            lambda r: (r.key, r.value, _replace(r.headers, "ce_source", b"\xff\xfe")),
            "invalid-cloudevent",
        ),
    ],
)
def test_decode_rejects_poison_with_a_reason(mutate: object, reason: str) -> None:
    record = encode(make_event())
    key, value, headers = mutate(record)  # type: ignore[operator]
    with pytest.raises(PoisonMessage) as caught:
        decode(key, value, headers)
    assert caught.value.reason == reason


def test_oversize_is_the_size_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The padded payload parses (unknown fields are kept): only the limit refuses it.
    record = encode(make_event())
    padded = _padded(record.value)
    monkeypatch.setattr(envelope, "MAX_EVENT_BYTES", len(padded))
    assert decode(record.key, padded, list(record.headers)).data == padded


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"tenant_id": "someone-else"}, "does not match"),
        ({"subject_ref": "cd" * 32}, "does not match"),
        ({"purpose": ""}, "required"),
        ({"subject_version": 0}, "subject_version"),
    ],
)
def test_decode_rejects_payload_that_contradicts_its_envelope(
    overrides: dict[str, object], problem: str
) -> None:
    record = encode(make_event(**overrides))
    with pytest.raises(PoisonMessage, match=problem) as caught:
        decode(record.key, record.value, list(record.headers))
    assert caught.value.reason == "schema-violation"


def test_timestamp_survives_round_trip() -> None:
    stamp = Timestamp()
    stamp.FromDatetime(datetime(2026, 1, 31, tzinfo=UTC))
    record = encode(make_event(occurred_at=stamp))
    received = decode(record.key, record.value, list(record.headers))
    assert isinstance(received.message, consent_pb2.ConsentGiven)
    occurred = received.message.decision.occurred_at.ToDatetime(tzinfo=UTC)
    assert occurred == datetime(2026, 1, 31, tzinfo=UTC)


def test_payload_times_round_trip_fall_back_when_unset_and_refuse_out_of_range() -> None:
    at = datetime(2026, 11, 29, 17, 45, 12, 345678, tzinfo=UTC)
    fallback = datetime(2000, 1, 1, tzinfo=UTC)
    decision = consent_pb2.ConsentDecision(occurred_at=to_timestamp(at))
    assert field_time(decision, "occurred_at", fallback) == at
    assert field_time(consent_pb2.ConsentDecision(), "occurred_at", fallback) == fallback
    assert field_time(consent_pb2.ConsentDecision(), "occurred_at", None) is None
    far = consent_pb2.ConsentDecision(occurred_at=Timestamp(seconds=2**40))  # year ~36812
    with pytest.raises(PoisonMessage) as raised:
        field_time(far, "occurred_at", fallback)
    assert raised.value.reason == "schema-violation"


def test_named_type_reads_the_type_from_the_headers_alone() -> None:
    record = encode(make_event())
    headers: list[tuple[str, bytes | None]] = list(record.headers)
    assert envelope.named_type(headers) is catalogue.CONSENT_GIVEN
    given, withdrawn = catalogue.CONSENT_GIVEN.name, catalogue.CONSENT_WITHDRAWN.name
    assert envelope.not_for({withdrawn}, headers)
    assert not envelope.not_for({given}, headers)
    # When the headers cannot tell, the record must be decoded (and may be poison).
    others = [item for item in headers if item[0] != "ce_type"]
    untellable: list[list[tuple[str, bytes | None]]] = [
        others,
        [*headers, ("ce_type", given.encode())],
        [*others, ("ce_type", None)],
        [*others, ("ce_type", b"\xff\xfe")],
        [*others, ("ce_type", b"consentry.consent.unheard_of.v1")],
    ]
    for case in untellable:
        assert envelope.named_type(case) is None
        assert not envelope.not_for({withdrawn}, case)
