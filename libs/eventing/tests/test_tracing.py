"""Trace context on events: `ce_traceparent` / `ce_tracestate` written, read, and taken from
the current OpenTelemetry context; and the environment that turns the SDK on."""

from __future__ import annotations

import dataclasses

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace

from consentry.eventing import tracing
from consentry.eventing.envelope import Event, decode, encode
from consentry.eventing.testing import consent_event

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACESTATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
TENANT = "00000000-0000-4000-8000-0000000000aa"
SUBJECT = "ab" * 32


def make_event() -> Event:
    return consent_event(TENANT, SUBJECT, 1)


def test_an_event_with_a_trace_writes_and_reads_the_distributed_tracing_headers() -> None:
    event = dataclasses.replace(make_event(), traceparent=TRACEPARENT, tracestate=TRACESTATE)
    record = encode(event)
    headers = dict(record.headers)
    assert headers["ce_traceparent"] == TRACEPARENT.encode()
    assert headers["ce_tracestate"] == TRACESTATE.encode()
    received = decode(record.key, record.value, list(record.headers))
    assert (received.traceparent, received.tracestate) == (TRACEPARENT, TRACESTATE)


def test_an_event_outside_a_trace_has_no_trace_headers_and_decodes_as_before() -> None:
    record = encode(make_event())
    assert not {"ce_traceparent", "ce_tracestate"} & dict(record.headers).keys()
    received = decode(record.key, record.value, list(record.headers))
    assert (received.traceparent, received.tracestate) == (None, None)


def test_an_event_built_in_a_traced_context_takes_that_trace_without_an_sdk() -> None:
    token = otel_context.attach(tracing.extract(TRACEPARENT, TRACESTATE))
    try:
        event = make_event()
    finally:
        otel_context.detach(token)
    later = make_event()  # built outside: untraced, whatever the first one carried
    assert (event.traceparent, event.tracestate) == (TRACEPARENT, TRACESTATE)
    assert later.traceparent is None
    received = decode(*_kvh(event))
    assert received.traceparent == TRACEPARENT


def test_an_explicit_trace_wins_over_the_current_one() -> None:
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"
    with tracing.span("outer", traceparent=TRACEPARENT):
        event = dataclasses.replace(make_event(), traceparent=other, tracestate=None)
    assert (event.traceparent, event.tracestate) == (other, None)


def _kvh(event: Event) -> tuple[bytes | None, bytes, list[tuple[str, bytes | None]]]:
    record = encode(event)
    return record.key, record.value, list(record.headers)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([("ce_traceparent", b"not-a-traceparent")], None),
        ([("ce_traceparent", b"00-" + b"0" * 32 + b"-00f067aa0ba902b7-01")], None),  # zero id
        ([("ce_traceparent", b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")], None),
        ([("ce_traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")], None),
        ([("ce_traceparent", b"\xff\xfe")], None),  # not UTF-8
        ([("ce_traceparent", TRACEPARENT.encode())] * 2, None),  # repeated
        ([("ce_traceparent", None)], None),
        ([("ce_tracestate", TRACESTATE.encode())], None),  # a state without a parent
        # a future version is read as version 00 (W3C Trace Context, "Versioning")
        (
            [("ce_traceparent", b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ab")],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ],
)
def test_a_malformed_trace_is_dropped_never_poison(
    extra: list[tuple[str, bytes | None]], expected: str | None
) -> None:
    record = encode(make_event())
    received = decode(record.key, record.value, [*record.headers, *extra])
    assert received.traceparent == expected
    assert received.id  # decoded, not dead-lettered


def test_a_span_without_a_parent_or_sdk_carries_no_trace() -> None:
    with tracing.span("handle", traceparent=None):
        assert tracing.current() is None
        assert make_event().traceparent is None
    with tracing.span("handle", traceparent=TRACEPARENT) as current:
        assert current.get_span_context().trace_id == int(TRACEPARENT[3:35], 16)
        assert make_event().traceparent == TRACEPARENT
    assert trace.get_current_span().get_span_context().is_valid is False


def test_trace_headers_name_their_parts() -> None:
    headers = tracing.parse(" " + TRACEPARENT, TRACESTATE)
    assert headers is not None
    assert headers.traceparent == TRACEPARENT  # OpenTelemetry's own form
    assert headers.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert headers.parent_id == "00f067aa0ba902b7"
    assert tracing.parse("garbage") is None
    assert tracing.parse(None) is None


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_sdk_is_wanted_only_when_otel_variables_ask(
    environ: dict[str, str], wanted: bool
) -> None:
    assert tracing.wanted(environ) is wanted


def test_configure_does_nothing_without_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing.configure("consentry-test") is False
    assert not trace.get_tracer_provider().__class__.__module__.startswith("opentelemetry.sdk")
