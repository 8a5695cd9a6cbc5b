"""Prometheus metrics of every consentry process (names in docs/operating.md).

One registry per process, `REGISTRY`. The APIs serve it at `GET /metrics`
(`consentry.httpapi.server.harden`); a worker serves it on `CONSENTRY_METRICS_PORT` when that is
set (`consentry.eventing.process.run_worker`). An API run as several uvicorn processes
(`CONSENTRY_HTTP_WORKERS` > 1) shares one port, so one scrape reaches one process only: `serve`
then points every process at one directory (prometheus_client's multiprocess mode, before the
metrics below are created) and `/metrics` sums the processes' files (`exposition`).

Labels never carry personal data: routes are templates, consumers and event kinds are names
from the code, reasons are the dead-letter reason slugs or a webhook failure class
(`http-503`, `timeout`, `connect-error`), never a recipient.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from datetime import datetime
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector
from pydantic import Field

from consentry.eventing.settings import ConsentrySettings

__all__ = ["CONTENT_TYPE_LATEST", "MetricsSettings", "exposition", "propagation_kind"]

MULTIPROCESS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"

REGISTRY = CollectorRegistry(auto_describe=True)

# SLO-shaped buckets: propagation is promised in seconds, not milliseconds.
PROPAGATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A webhook attempt may take up to its timeout (CONSENTRY_WEBHOOK_TIMEOUT_SECONDS, <= 120 s).
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

HTTP_REQUESTS = Counter(
    "consentry_http_requests",
    "HTTP requests answered, by route template",
    ["service", "route", "method", "status"],
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "consentry_http_request_duration_seconds",
    "Time to answer an HTTP request, by route template",
    ["service", "route", "method", "status"],
    buckets=HTTP_BUCKETS,
    registry=REGISTRY,
)
OUTBOX_BACKLOG = Gauge(
    "consentry_outbox_backlog",
    "Outbox rows not yet published (after the relay's last pass)",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
OUTBOX_OLDEST_AGE = Gauge(
    "consentry_outbox_oldest_age_seconds",
    "Age of the oldest unpublished outbox row (0 when none)",
    ["service"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
DEAD_LETTERS = Counter(
    "consentry_dead_letters",
    "Records sent to a consumer's dead-letter topic",
    ["consumer", "reason"],
    registry=REGISTRY,
)
PROPAGATION = Histogram(
    "consentry_propagation_seconds",
    "From the event's time (accepted/recorded upstream) to its effect committed downstream",
    ["kind", "consumer"],
    buckets=PROPAGATION_BUCKETS,
    registry=REGISTRY,
)
LOG_REWINDS = Counter(
    "consentry_consumer_log_rewinds",
    "Partitions a consumer re-read from the beginning because their log ended before its"
    " position (the broker lost data)",
    ["consumer", "topic"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "consentry_consumer_lag",
    "Records behind the partition's high watermark after the consumer's last batch",
    ["consumer", "topic", "partition"],
    registry=REGISTRY,
    multiprocess_mode="max",
)
# The subprocessors sender. Labels are the outcome and the failure class only: a recipient's
# id, name or URL is tenant data and would make a series per recipient.
WEBHOOK_DELIVERIES = Counter(
    "consentry_webhook_deliveries",
    "Webhook attempt outcomes recorded by the subprocessors sender: acknowledged, delivered "
    "(2xx, acknowledgement awaited), retry_scheduled or dead_lettered, with the failure class",
    ["outcome", "reason"],
    registry=REGISTRY,
)
WEBHOOK_DURATION = Histogram(
    "consentry_webhook_attempt_duration_seconds",
    "Time of one webhook POST, from sending to the answer read (or the failure)",
    ["result"],
    buckets=WEBHOOK_BUCKETS,
    registry=REGISTRY,
)

_KINDS = {
    "consentry.consent.given.v1": "consent",
    "consentry.consent.withdrawn.v1": "consent",
    "consentry.preferences.unsubscribed.v1": "unsubscribe",
    "consentry.lists.member_suppressed.v1": "unsubscribe",
    "consentry.rights.erasure_requested.v1": "erasure",
}


class MetricsSettings(ConsentrySettings):
    """Where a worker serves its metrics, and the service name its metrics carry."""

    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="worker metrics port; unset: none served"
    )
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from other hosts/pods
    service_name: str = Field(
        default="", description="`service` label; empty: Prometheus's target label applies"
    )


def service_name() -> str:
    """This process's `service` label (`CONSENTRY_SERVICE_NAME`)."""
    return MetricsSettings().service_name


def propagation_kind(event_type: str) -> str:
    """consent, unsubscribe, erasure, or the type's short name (`consent.intake`)."""
    kind = _KINDS.get(event_type)
    if kind is not None:
        return kind
    name = event_type.removeprefix("consentry.")
    head, _, version = name.rpartition(".")
    return head if head and version.startswith("v") and version[1:].isdigit() else name


def observe_propagation(consumer: str, events: Iterable[tuple[str, datetime]]) -> None:
    """Observe now - event time for `(event type, time)` pairs whose effects just committed."""
    now = time.time()
    for event_type, at in events:
        PROPAGATION.labels(propagation_kind(event_type), consumer).observe(
            max(0.0, now - at.timestamp())
        )


def exposition() -> bytes:
    """The text exposition of this process (of every process in multiprocess mode)."""
    directory = os.environ.get(MULTIPROCESS_DIR_ENV)
    if directory:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def serve_metrics(settings: MetricsSettings) -> WSGIServer | None:
    """Serve `REGISTRY` on `settings.metrics_port` from a daemon thread (any path answers);
    None when no port is set. Port 0 picks a free port (`server.server_port`)."""
    if settings.metrics_port is None:
        return None
    server, _ = start_http_server(settings.metrics_port, settings.metrics_host, registry=REGISTRY)
    return server
