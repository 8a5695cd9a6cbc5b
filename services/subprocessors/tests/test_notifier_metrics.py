"""The notifier's and sender's metrics: webhook outcomes by failure class, attempt latency,
and propagation of the events it turns into notices (the notifier runs in this process, so
its registry is read directly)."""

from __future__ import annotations

import uuid

import asyncpg
import httpx

from consentry.eventing import metrics
from consentry.subprocessors.settings import NotifierSettings

from .conftest import (
    Receivers,
    erasure_requested,
    eventually,
    fail_first,
    notifier,
    ok,
    produce,
    register,
    signed_ack,
)

OUTCOMES = (
    ("acknowledged", ""),
    ("delivered", ""),
    ("retry_scheduled", "http-503"),
    ("retry_scheduled", "http-500"),
    ("dead_lettered", "http-500"),
)


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def snapshot() -> dict[str, float]:
    values = {
        f"{outcome}/{reason}": sample(
            "consentry_webhook_deliveries_total", outcome=outcome, reason=reason
        )
        for outcome, reason in OUTCOMES
    }
    for result in ("acknowledged", "failed"):
        values[f"duration/{result}"] = sample(
            "consentry_webhook_attempt_duration_seconds_count", result=result
        )
    values["propagation"] = sample(
        "consentry_propagation_seconds_count", kind="erasure", consumer="subprocessor-notifier"
    )
    return values


async def _statuses(db: asyncpg.Connection, tenant: uuid.UUID) -> dict[str, asyncpg.Record]:
    rows = await db.fetch(
        "SELECT r.name, d.status, d.attempts FROM deliveries d"
        " JOIN recipients r ON r.tenant_id = d.tenant_id AND r.id = d.recipient_id"
        " WHERE d.tenant_id = $1",
        tenant,
    )
    return {row["name"]: row for row in rows}


async def test_outcomes_latency_and_propagation_are_counted(
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tenant: uuid.UUID,
    receivers: Receivers,
    notifier_settings: NotifierSettings,
) -> None:
    flaky, down = receivers.add("flaky"), receivers.add("down")
    for hook in (flaky, down):
        hook.secret = (await register(client, hook.name, hook.url))["signing_secret"]
    flaky.behaviour = fail_first(1, signed_ack(flaky.secret))  # a 503, then acknowledged
    down.behaviour = ok(status=500)
    settings = notifier_settings.model_copy(update={"retry_window_seconds": 2.0})
    before = snapshot()
    async with notifier(settings):
        await produce(
            settings.kafka_bootstrap_servers, [erasure_requested(tenant, request_id="req-m")]
        )
        rows = await eventually(
            lambda: _statuses(db, tenant),
            lambda rows: {r["status"] for r in rows.values()} == {"acknowledged", "dead_lettered"},
        )
    # The notifier has stopped: every outcome it recorded is counted.
    after = snapshot()
    delta = {name: after[name] - before[name] for name in after}
    down_attempts = rows["down"]["attempts"]
    assert rows["flaky"]["attempts"] == 2
    assert delta["acknowledged/"] == 1
    assert delta["delivered/"] == 0
    assert delta["retry_scheduled/http-503"] == 1
    assert delta["retry_scheduled/http-500"] == down_attempts - 1
    assert delta["dead_lettered/http-500"] == 1
    assert delta["duration/acknowledged"] == 1
    assert delta["duration/failed"] == 1 + down_attempts
    # Other tests' erasure requests on the shared topic count too (a new group reads from
    # the start); ours is among them.
    assert delta["propagation"] >= 1
