"""A wall-clock step on one process under load (NTP stepping a drifted host, a VM resumed):
the consent API's clock jumps an hour forwards, then two hours back; the audit appender's
an hour back. Only that process's `time.time()`/`datetime.now()` move (`ClockStep`):
monotonic clocks, PostgreSQL's `now()` and the other processes keep the true time.

Nothing may be lost or applied twice, and the chain (whose checkpoints carry the appender's
times) must still verify.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from uuid import UUID

import asyncpg
import pytest
import pytest_asyncio

from consentry.devstack.clockstep import ENV_FILE, ENV_OFFSET, ClockStep
from consentry.devstack.services import DEV_TENANT_ID

from .harness import FaultStack, Load, WebhookSink, recover, timing
from .test_network_faults import restart_with

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

HOUR = 3600.0
STEPPED = (("consent", "api"), ("audit", "appender"))
# Evidence that the step reached what each process stores: the newest time it wrote, minus
# PostgreSQL's true time, in seconds (the API stamps `occurred_at`; the appender signs
# checkpoint times).
SKEW = {
    ("consent", "api"): (
        "consent",
        "SELECT extract(epoch FROM occurred_at - recorded_at) FROM consent_ledger"
        " WHERE tenant_id = $1 ORDER BY recorded_at DESC LIMIT 1",
    ),
    ("audit", "appender"): (
        "audit",
        "SELECT extract(epoch FROM checkpoint_time - now()) FROM audit_checkpoints"
        " WHERE tenant_id = $1 ORDER BY tree_size DESC LIMIT 1",
    ),
}
# Entries of the tenant's chain that no signed checkpoint covers yet.
UNCHECKPOINTED = """
SELECT h.seq - coalesce(max(c.tree_size), 0) FROM audit_chain_heads h
LEFT JOIN audit_checkpoints c USING (tenant_id) WHERE h.tenant_id = $1 GROUP BY h.seq
"""


async def _fetch(stack: FaultStack, database: str, query: str) -> float:
    conn = await asyncpg.connect(stack.database_dsn(database))
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL consentry.tenant_id = '{DEV_TENANT_ID}'")
            return float(await conn.fetchval(query, UUID(DEV_TENANT_ID)))
    finally:
        await conn.close()


async def _all_checkpointed(stack: FaultStack, seconds: float = 15) -> float:
    """Wait until a checkpoint covers the whole chain (the timer signs one 0.5 s after new
    entries, in this stack); the entries left uncovered when the time is up."""
    deadline = time.monotonic() + seconds
    while (left := await _fetch(stack, "audit", UNCHECKPOINTED)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return left


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def clocks(
    fault_stack: FaultStack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[dict[tuple[str, str], ClockStep]]:
    """The STEPPED processes restarted on a clock each of them follows (true time at first)."""
    directory = tmp_path_factory.mktemp("clocks")
    steps = {key: ClockStep(directory, name=".".join(key)) for key in STEPPED}
    for key, clock in steps.items():

        def follow(env: Mapping[str, str], clock: ClockStep = clock) -> dict[str, str]:
            return {**env, **clock.env}

        await restart_with(fault_stack, (key,), follow)
        await clock.wait_applied(60)
    try:
        yield steps
    finally:

        def true_time(env: Mapping[str, str]) -> dict[str, str]:
            return {k: v for k, v in env.items() if k not in (ENV_OFFSET, ENV_FILE)}

        await restart_with(fault_stack, STEPPED, true_time)


async def _step_case(
    stack: FaultStack,
    sink: WebhookSink,
    clocks: dict[tuple[str, str], ClockStep],
    key: tuple[str, str],
    case: str,
    seconds: float,
) -> None:
    form = timing()
    clock, worker = clocks[key], stack.worker(*key)
    starts = worker.starts
    load = await Load.prepare(stack)
    async with load.running():
        await load.run_for(form.before_fault)
        fault_at = time.monotonic()
        clock.step(seconds)
        await clock.wait_applied()
        await load.run_for(form.after_fault)
    await stack.wait_running()
    row = await recover(stack, load, case, fault_at, sink=sink)
    assert load.accepted, "the load had nothing accepted: the case would prove nothing"
    assert row.ok, row.failures
    assert (row.lost, row.duplicated) == (0, 0)
    assert worker.starts == starts, f"the step crashed {key}: {worker.tail()}"
    # The audit promise holds across the step: new entries get a signed checkpoint soon.
    left = await _all_checkpointed(stack)
    assert left == 0, f"{left:.0f} entries are covered by no checkpoint since the clock step"
    skew = await _fetch(stack, *SKEW[key])
    assert abs(skew - clock.offset) < 120, f"{key} stored times {skew:+.0f}s off, not stepped"


async def test_clock_step_forwards_on_the_consent_api(
    fault_stack: FaultStack,
    registered_sink: WebhookSink,
    clocks: dict[tuple[str, str], ClockStep],
) -> None:
    await _step_case(
        fault_stack, registered_sink, clocks, ("consent", "api"), "consent API clock +1 h", HOUR
    )


async def test_clock_step_backwards_on_the_consent_api(
    fault_stack: FaultStack,
    registered_sink: WebhookSink,
    clocks: dict[tuple[str, str], ClockStep],
) -> None:
    await _step_case(
        fault_stack,
        registered_sink,
        clocks,
        ("consent", "api"),
        "consent API clock -2 h (to -1 h)",
        -2 * HOUR,
    )


async def test_clock_step_backwards_on_the_audit_appender(
    fault_stack: FaultStack,
    registered_sink: WebhookSink,
    clocks: dict[tuple[str, str], ClockStep],
) -> None:
    await _step_case(
        fault_stack,
        registered_sink,
        clocks,
        ("audit", "appender"),
        "audit appender clock -1 h",
        -HOUR,
    )
