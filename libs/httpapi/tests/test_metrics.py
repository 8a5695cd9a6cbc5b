"""GET /metrics on a hardened app: request counts by route template, no raw path."""

from __future__ import annotations

import uuid

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from consentry.httpapi.server import HttpSettings, harden


def make_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/subjects/{subject_id}")
    async def subject(subject_id: str) -> dict[str, str]:
        return {"ok": "yes"}

    return harden(app, HttpSettings())


def samples(text: str, name: str, **labels: str) -> dict[str, float]:
    """`name`'s samples whose labels include `labels`, by sample name."""
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(name) and labels.items() <= sample.labels.items():
                key = sample.name + (
                    "{le=" + sample.labels["le"] + "}" if "le" in sample.labels else ""
                )
                found[key] = found.get(key, 0.0) + sample.value
    return found


async def test_metrics_count_requests_by_route_template_without_the_subject_id() -> None:
    subject_id = f"person-{uuid.uuid4().hex}@example.com"
    transport = httpx.ASGITransport(app=make_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        route = {"route": "/v1/subjects/{subject_id}", "method": "GET", "status": "200"}
        before = samples((await client.get("/metrics")).text, "consentry_http_requests", **route)
        for _ in range(3):
            assert (await client.get(f"/v1/subjects/{subject_id}")).status_code == 200
        assert (await client.get(f"/nowhere/{subject_id}")).status_code == 404
        response = await client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert subject_id not in text
    assert "/nowhere" not in text
    after = samples(text, "consentry_http_requests", **route)
    counted = "consentry_http_requests_total"
    assert after[counted] - before.get(counted, 0.0) == 3
    unmatched = samples(text, "consentry_http_requests_total", route="(unmatched)", status="404")
    assert unmatched["consentry_http_requests_total"] >= 1
    durations = samples(text, "consentry_http_request_duration_seconds_count", **route)
    assert durations["consentry_http_request_duration_seconds_count"] >= 3
    assert "/metrics" not in make_app().openapi()["paths"]
