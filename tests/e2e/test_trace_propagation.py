"""A trace id given to the SDK appears in the audit entry's metadata (issue 9), through real
processes and the real broker: SDK → consent API (group commit) → outbox → relay → Kafka →
audit appender → entry; and SDK EventProducer → intake topic → consent intake → ... → entry.
No process of the stack has an OpenTelemetry SDK: propagation needs the API alone."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest

from consentry.devstack.services import DEV_API_KEY, DEV_TENANT_ID
from consentry.devstack.stack import DevStack
from consentry.devstack.testing_workers import Worker
from consentry.sdk import AsyncConsentry, traced
from consentry.sdk.producer import EventProducer

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


async def entries_of(
    audit_api: httpx.AsyncClient, subject_ref: str, count: int, seconds: float = 90
) -> list[dict[str, Any]]:
    """Poll the audit API until the subject's chain holds `count` entries of consent."""
    async with asyncio.timeout(seconds):
        while True:
            page = (
                await audit_api.get(
                    "/v1/audit/entries", params={"subject_ref": subject_ref, "limit": 1000}
                )
            ).json()
            entries: list[dict[str, Any]] = [
                e for e in page["entries"] if e["event_type"].startswith("consentry.consent.")
            ]
            if len(entries) >= count:
                return entries
            await asyncio.sleep(0.2)


async def test_a_trace_given_to_the_sdk_reaches_the_audit_entries(
    stack: DevStack, relay: Worker, dev_policy: str, audit_api: httpx.AsyncClient
) -> None:
    traced_subject, untraced_subject = f"trace-{secrets.token_hex(6)}", secrets.token_hex(6)
    traceparent = new_traceparent()
    async with AsyncConsentry(DEV_API_KEY, consent_url=stack.api_url("consent")) as api:
        # Concurrent PUTs share the group-commit writer's transactions: each event must carry
        # its own request's trace, not its neighbour's or the writer task's.
        others = [f"{untraced_subject}-{n}" for n in range(5)]

        async def give_traced() -> None:
            with traced(traceparent):
                await api.give(traced_subject, "performance", policy_version=dev_policy)

        await asyncio.gather(
            give_traced(),
            *(api.give(other, "performance", policy_version=dev_policy) for other in others),
        )
        traced_ref, *other_refs = await api.subject_refs([traced_subject, *others])
    (entry,) = await entries_of(audit_api, traced_ref, 1)
    assert entry["event_type"] == "consentry.consent.given.v1"
    assert (
        entry["metadata"]["trace"]
        == {
            "traceparent": traceparent,  # no SDK in the stack: the caller's span id flows on
            "trace_id": traceparent[3:35],
            "parent_id": traceparent[36:52],
        }
    )
    for other_ref in other_refs:
        (untraced,) = await entries_of(audit_api, other_ref, 1)
        assert untraced["metadata"]["trace"] is None


async def test_a_trace_given_to_the_event_producer_reaches_the_audit_entry(
    stack: DevStack, relay: Worker, dev_policy: str, audit_api: httpx.AsyncClient
) -> None:
    subject = f"trace-intake-{secrets.token_hex(6)}"
    traceparent = new_traceparent()
    async with AsyncConsentry(DEV_API_KEY, consent_url=stack.api_url("consent")) as api:
        (subject_ref,) = await api.subject_refs([subject])
    async with EventProducer(stack.bootstrap, tenant_id=str(DEV_TENANT_ID)) as producer:
        await producer.capture(
            subject_ref,
            {"performance": "given", "functionality": "given"},
            policy_version=dev_policy,
            traceparent=traceparent,
        )
        await producer.flush(30)
    entries = await entries_of(audit_api, subject_ref, 2)
    given = [e for e in entries if e["event_type"] == "consentry.consent.given.v1"]
    assert len(given) == 2
    assert {e["metadata"]["trace"]["traceparent"] for e in given} == {traceparent}
