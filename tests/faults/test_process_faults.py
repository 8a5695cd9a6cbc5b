"""kill -9 of one process under steady load, restarted, then every invariant: nothing the
APIs accepted is lost, nothing is applied twice, the chain verifies."""

from __future__ import annotations

import asyncio
import time

import pytest

from .harness import FaultStack, Load, WebhookSink, recover, timing

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]


async def _kill_under_load(
    stack: FaultStack, sink: WebhookSink, case: str, service: str, process: str
) -> None:
    form = timing()
    load = await Load.prepare(stack)
    async with load.running():
        await load.run_for(form.before_fault)
        fault_at = time.monotonic()
        starts = stack.worker(service, process).starts
        await stack.kill(service, process)
        await load.run_for(form.after_fault)
    async with asyncio.timeout(60):  # the keeper started it again
        while stack.worker(service, process).starts == starts:
            await asyncio.sleep(0.1)
    await stack.wait_running()
    row = await recover(stack, load, case, fault_at, sink=sink, every_erasure_told=True)
    assert load.accepted, "the load had nothing accepted: the case would prove nothing"
    assert row.ok, row.failures
    assert (row.lost, row.duplicated) == (0, 0)


async def test_kill_9_of_the_consent_api_mid_request(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    await _kill_under_load(fault_stack, registered_sink, "consent API kill -9", "consent", "api")


async def test_kill_9_of_the_consent_relay_mid_batch(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    await _kill_under_load(
        fault_stack, registered_sink, "consent relay kill -9", "consent", "relay"
    )


async def test_kill_9_of_the_list_processor(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    await _kill_under_load(
        fault_stack,
        registered_sink,
        "list processor (faust) kill -9",
        "preferences",
        "list-processor",
    )


async def test_kill_9_of_the_subprocessor_notifier(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    await _kill_under_load(
        fault_stack, registered_sink, "notifier (faust) kill -9", "subprocessors", "notifier"
    )


async def test_kill_9_of_the_subprocessor_sender(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    """The sender posts the notifier's deliveries (by default the notifier does not): its
    leases lapse and what it held is posted again under the same webhook-id."""
    await _kill_under_load(
        fault_stack, registered_sink, "webhook sender kill -9", "subprocessors", "sender"
    )


async def test_kill_9_of_the_audit_appender_mid_batch(
    fault_stack: FaultStack, registered_sink: WebhookSink
) -> None:
    await _kill_under_load(
        fault_stack, registered_sink, "audit appender kill -9", "audit", "appender"
    )
