"""Metrics scraped over HTTP from the running stack, as Prometheus does: after consent
traffic, the consent API's request counter and the audit appender's propagation histogram
(a worker started here with `CONSENTRY_METRICS_PORT`) have moved by the events sent."""

from __future__ import annotations

import asyncio
import secrets
import signal
import socket
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from consentry.devstack.postgres import with_user
from consentry.devstack.stack import DevStack
from consentry.devstack.testing_workers import Worker

from .conftest import service_worker
from .test_consent_to_audit import decide

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

SUBJECTS = 5
CONSUMER = "audit-appender"  # its group and `consumer` label (CONSENTRY_APPENDER_GROUP_ID)
ROUTE = "/v1/subjects/{subject_id}/consents/{purpose}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


Samples = list[Sample]


async def scrape(url: str) -> Samples | None:
    """Every sample `url` exposes; None while nothing answers there (still starting)."""
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url)
    except httpx.TransportError:
        return None
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, labels: dict[str, str]) -> float:
    """The sum of the samples `name` whose labels include `labels`."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())


async def wait_for(
    url: str, name: str, labels: dict[str, str], at_least: float, seconds: float = 120
) -> Samples:
    """Poll the scrape until the value reaches `at_least` (the scrape then); fail with the
    last value."""
    samples: Samples | None = None
    try:
        async with asyncio.timeout(seconds):
            while samples is None or total(samples, name, labels) < at_least:
                await asyncio.sleep(0.2)
                samples = await scrape(url)
    except TimeoutError:
        last = None if samples is None else total(samples, name, labels)
        pytest.fail(f"{name}{labels} at {url}: {last}, expected >= {at_least}")
    return samples


async def test_api_and_worker_metrics_move_with_traffic(
    stack: DevStack,
    relay: Worker,
    appender: Worker,
    consent_api: httpx.AsyncClient,
    log_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The package's appender serves no metrics: replace it, for this test, by one that does
    # (same group: it takes over every partition), and put the package's back afterwards.
    await appender.kill(signal.SIGTERM)
    port = free_port()
    monkeypatch.setenv("CONSENTRY_METRICS_PORT", str(port))
    monkeypatch.setenv("CONSENTRY_METRICS_HOST", "127.0.0.1")
    dsn = with_user(stack.database_dsn("audit"), "consentry_audit_app")
    scraped = service_worker("audit", "appender", dsn, stack.bootstrap, log_dir)
    monkeypatch.undo()  # the Worker copied the environment; nothing else gets the port
    await scraped.start()
    try:
        worker_url = f"http://127.0.0.1:{port}/metrics"
        api_url = f"{stack.api_url('consent')}/metrics"
        propagation = {"kind": "consent", "consumer": CONSUMER}
        count = "consentry_propagation_seconds_count"
        worker_before = total(await wait_for(worker_url, count, propagation, 0), count, propagation)
        requests = {"route": ROUTE, "method": "PUT", "status": "200"}
        api = await scrape(api_url)
        assert api is not None
        api_before = total(api, "consentry_http_requests_total", requests)

        for _ in range(SUBJECTS):
            await decide(consent_api, f"metrics-{secrets.token_hex(6)}", "performance", "given")

        api = await scrape(api_url)
        assert api is not None
        assert total(api, "consentry_http_requests_total", requests) == api_before + SUBJECTS
        assert total(api, "consentry_http_request_duration_seconds_count", requests) > 0
        # Appended to the audit chain: each consent event's propagation is observed once its
        # entry commits (the appender may also append events the old one left behind).
        worker = await wait_for(worker_url, count, propagation, worker_before + SUBJECTS)
        # One scrape's histogram is whole: every observation is in the +Inf bucket.
        inf = {"le": "+Inf", **propagation}
        assert total(worker, "consentry_propagation_seconds_bucket", inf) == total(
            worker, count, propagation
        )
        # The same port answers the worker's liveness and readiness (PostgreSQL, the broker).
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as probe:
            assert (await probe.get("/healthz")).json() == {"status": "ok", "loop": "ok"}
            ready = await probe.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"loop": "ok", "database": "ok", "broker": "ok"}
    finally:
        await scraped.kill(signal.SIGTERM)
        await appender.start()
