"""Network faults between services and PostgreSQL, through a TCP fault proxy on loopback.

PostgreSQL: the consent API (the group-commit write path) and the audit appender (the
chain) reach it through one `FaultProxy`; every other process connects directly.

The broker: a client bootstrapped through a proxy talks to whatever address the broker
advertises in its Metadata and FindCoordinator answers, so one process cannot be put
behind a proxy without rewriting the Kafka protocol. Instead a stack of this module's own
runs on a broker that advertises the proxy's port: every process reaches the broker through
it, and a fault hits them all at once.

Each case runs the steady load, injects one fault, heals it, and ends with the harness's
invariants.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import urlsplit

import pytest
import pytest_asyncio

from consentry.devstack.broker import TANSU_CLIENT_ENV, EmbeddedBroker
from consentry.devstack.faultproxy import Direction, FaultProxy, Latency
from consentry.devstack.services import ENV_DATABASE_URL, ENV_KAFKA_BOOTSTRAP_SERVERS
from consentry.devstack.spawning import free_port

from .harness import FaultStack, Load, WebhookSink, recover, timing

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

ROUTED = (("consent", "api"), ("audit", "appender"))
# A dead connection is found by a timeout only (asyncpg's command_timeout and aiokafka's
# request timeout are 30 s each), then consumers rejoin their groups: measured 30-90 s.
HALF_OPEN_RECOVERY = 180.0


async def restart_with(
    stack: FaultStack,
    keys: tuple[tuple[str, str], ...],
    change: Callable[[Mapping[str, str]], dict[str, str]],
) -> None:
    """Stop the processes `keys`, change their environment, start them again (ready)."""
    for key in keys:
        stack.hold(*key)
    try:
        await asyncio.gather(*(stack.kill(*key, sig=signal.SIGTERM) for key in keys))
        for key in keys:
            worker = stack.worker(*key)
            # The harness has no public setter for a worker's environment (yet).
            worker._env = change(worker._env)
        await asyncio.gather(*(stack.worker(*key).start(wait=True) for key in keys))
    finally:
        for key in keys:
            stack.release(*key)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pg_proxy(fault_stack: FaultStack) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of PostgreSQL for the ROUTED processes (for this module)."""
    server = urlsplit(fault_stack.pg_server_dsn)
    assert server.hostname is not None
    assert server.port is not None
    async with FaultProxy(server.hostname, server.port) as proxy:
        direct: dict[str, str] = {}  # proxied DSN -> the DSN it replaced

        def through_proxy(env: Mapping[str, str]) -> dict[str, str]:
            routed = proxy.route(env[ENV_DATABASE_URL])
            direct[routed] = env[ENV_DATABASE_URL]
            return {**env, ENV_DATABASE_URL: routed}

        def directly(env: Mapping[str, str]) -> dict[str, str]:
            return {**env, ENV_DATABASE_URL: direct[env[ENV_DATABASE_URL]]}

        await restart_with(fault_stack, ROUTED, through_proxy)
        assert proxy.stats.connections > 0, "the routed processes did not connect through it"
        try:
            yield proxy
        finally:
            await proxy.pass_through()
            await restart_with(fault_stack, ROUTED, directly)


async def _fault_case(
    stack: FaultStack,
    sink: WebhookSink,
    proxy: FaultProxy,
    case: str,
    fault: Callable[[Load], object],
    *,
    recovery: float | None = None,
) -> None:
    """Load; `fault(load)` (sync or async) while the load runs; heal; the invariants
    within `recovery` seconds (default: the form's)."""
    form = timing()
    load = await Load.prepare(stack)
    async with load.running():
        await load.run_for(form.before_fault)
        fault_at = time.monotonic()
        result = fault(load)
        if asyncio.iscoroutine(result):
            await result
        await proxy.pass_through()
        await load.run_for(form.after_fault)
    await stack.wait_running()
    row = await recover(stack, load, case, fault_at, sink=sink, seconds=recovery)
    assert load.accepted, "the load had nothing accepted: the case would prove nothing"
    logs = {f"{s}.{p}": stack.worker(s, p).tail(3000) for s, p in ROUTED}
    assert row.ok, (row.failures, proxy.stats, logs)
    assert (row.lost, row.duplicated) == (0, 0)


async def test_latency_and_jitter_to_postgres(
    fault_stack: FaultStack, registered_sink: WebhookSink, pg_proxy: FaultProxy
) -> None:
    accepted_before = 0

    async def slow(load: Load) -> None:
        nonlocal accepted_before
        accepted_before = len(load.accepted)
        latency = Latency(0.05, jitter=0.1)
        pg_proxy.set_latency(upstream=latency, downstream=latency)
        await load.run_for(timing().after_fault)

    await _fault_case(
        fault_stack, registered_sink, pg_proxy, "PostgreSQL latency 50-150 ms each way", slow
    )


async def test_half_open_connections_to_postgres(
    fault_stack: FaultStack, registered_sink: WebhookSink, pg_proxy: FaultProxy
) -> None:
    """Every byte dropped for a while; the connections open then stay dead (half-open):
    the processes must notice (command timeout) and reconnect through the healed network."""

    async def partition(load: Load) -> None:
        pg_proxy.drop()
        await load.run_for(timing().after_fault)

    try:
        await _fault_case(
            fault_stack,
            registered_sink,
            pg_proxy,
            "PostgreSQL packets dropped, connections half-open",
            partition,
            recovery=HALF_OPEN_RECOVERY,
        )
    finally:
        # Pooled connections that were idle during the drop are still dead, and nothing
        # tells their pool until a request on one times out (command_timeout, 30 s): RST
        # them, as TCP keepalive eventually would, so the next case starts clean.
        pg_proxy.reset()


async def test_reset_mid_transaction_to_postgres(
    fault_stack: FaultStack, registered_sink: WebhookSink, pg_proxy: FaultProxy
) -> None:
    async def resets(load: Load) -> None:
        for _ in range(3):
            await load.run_for(0.5)
            pg_proxy.reset()

    await _fault_case(
        fault_stack, registered_sink, pg_proxy, "PostgreSQL connections reset (RST)", resets
    )


async def test_commit_answer_lost_to_postgres(
    fault_stack: FaultStack, registered_sink: WebhookSink, pg_proxy: FaultProxy
) -> None:
    """Every connection is cut by the next byte PostgreSQL sends: a COMMIT that reached the
    server is answered by an error (an ambiguous commit), then connections are refused."""

    async def cut(load: Load) -> None:
        pg_proxy.cut_after(0, Direction.DOWN)
        await load.run_for(1.0)
        pg_proxy.refuse()
        await load.run_for(1.0)

    await _fault_case(
        fault_stack,
        registered_sink,
        pg_proxy,
        "PostgreSQL answers cut, then connections refused",
        cut,
    )


# --- between every process and the broker --------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def broker_faults(
    pg_server_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[FaultStack, FaultProxy, WebhookSink]]:
    """A stack whose embedded broker advertises a fault proxy: all broker traffic crosses it."""
    front = free_port()
    broker = EmbeddedBroker(advertised_port=front)
    host, port = (await asyncio.to_thread(broker.start)).rsplit(":", 1)
    try:
        async with FaultProxy(host, int(port), port=front) as proxy:
            # FaultStack takes a configured broker from the environment (its processes
            # inherit it too).
            with pytest.MonkeyPatch.context() as environment:
                for name, value in {
                    ENV_KAFKA_BOOTSTRAP_SERVERS: proxy.address,
                    **TANSU_CLIENT_ENV,
                }.items():
                    environment.setenv(name, value)
                logs = tmp_path_factory.mktemp("broker-faults-logs")
                async with FaultStack(pg_server_dsn, logs, label="kfk") as stack:
                    await stack.prepare_tenant()
                    with WebhookSink() as sink:
                        await sink.register(stack)
                        yield stack, proxy, sink
    finally:
        await asyncio.to_thread(broker.stop)


async def test_latency_and_jitter_to_the_broker(
    broker_faults: tuple[FaultStack, FaultProxy, WebhookSink],
) -> None:
    stack, proxy, sink = broker_faults

    async def slow(load: Load) -> None:
        latency = Latency(0.05, jitter=0.1)
        proxy.set_latency(upstream=latency, downstream=latency)
        await load.run_for(timing().after_fault)

    await _fault_case(stack, sink, proxy, "broker latency 50-150 ms each way", slow)


async def test_half_open_connections_to_the_broker(
    broker_faults: tuple[FaultStack, FaultProxy, WebhookSink],
) -> None:
    stack, proxy, sink = broker_faults

    async def partition(load: Load) -> None:
        proxy.drop()
        await load.run_for(timing().after_fault)

    try:
        await _fault_case(
            stack,
            sink,
            proxy,
            "broker packets dropped, connections half-open",
            partition,
            recovery=HALF_OPEN_RECOVERY,
        )
    finally:
        proxy.reset()  # as for PostgreSQL: the next case starts on live connections


async def test_reset_connections_to_the_broker(
    broker_faults: tuple[FaultStack, FaultProxy, WebhookSink],
) -> None:
    stack, proxy, sink = broker_faults

    async def resets(load: Load) -> None:
        for _ in range(3):
            await load.run_for(0.5)
            proxy.reset()

    await _fault_case(stack, sink, proxy, "broker connections reset (RST)", resets)
