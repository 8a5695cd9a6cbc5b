"""Fixtures of the fault suite (one stack for the package) and its figures table."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio

from consentry.devstack.pytest_plugin import report_section

from .harness import QUICK, RESULTS, CaseResult, FaultStack, WebhookSink, timing

RESULTS_FILE = Path(__file__).parent / "results" / "latest.md"
# The bounded form `make test` runs: one case of each kind (a process killed mid-batch, an
# event out of order, poison, connections reset mid-transaction). `make test-faults` (the
# full form, which CI runs as well) runs every case with longer load.
BOUNDED = frozenset(
    {
        "test_kill_9_of_the_consent_relay_mid_batch",
        "test_kill_9_of_the_audit_appender_mid_batch",
        "test_out_of_order_consent_version_is_ignored",
        "test_poison_of_every_kind_is_dead_lettered_and_partitions_move_on",
        "test_reset_mid_transaction_to_postgres",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In the quick form, keep only the `BOUNDED` cases of this package (deselected, not
    skipped: the full form runs them)."""
    if timing() is not QUICK:
        return
    here = Path(__file__).parent
    dropped = [
        item
        for item in items
        if item.path.is_relative_to(here) and getattr(item, "originalname", "") not in BOUNDED
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


@pytest.fixture(scope="package")
def fault_log_dir() -> Iterator[Path]:
    """Where every process of the fault stack writes its output (`<service>.<process>.log`)."""
    kept = os.environ.get("CONSENTRY_FAULTS_LOG_DIR")  # to read them after the run
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        yield Path(kept)
        return
    with tempfile.TemporaryDirectory(prefix="consentry-faults-logs-") as directory:
        yield Path(directory)


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def fault_stack(pg_server_dsn: str, fault_log_dir: Path) -> AsyncIterator[FaultStack]:
    """The whole stack, every process a `Worker`, the dev tenant's policy and topic ready."""
    async with FaultStack(pg_server_dsn, fault_log_dir) as stack:
        await stack.prepare_tenant()
        yield stack


@pytest.fixture(scope="package")
def webhook_sink() -> Iterator[WebhookSink]:
    """A webhook recipient's endpoint on loopback (registered by `registered_sink`)."""
    with WebhookSink() as sink:
        yield sink


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def registered_sink(fault_stack: FaultStack, webhook_sink: WebhookSink) -> WebhookSink:
    """The sink registered as the dev tenant's recipient: erasures reach it."""
    await webhook_sink.register(fault_stack)
    return webhook_sink


def _table(rows: list[CaseResult]) -> str:
    header = (
        "| case | sent | accepted | in audit | lost | duplicated | recovery (s) "
        "| restarts (cumulative) |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r.case} | {r.sent} | {r.accepted} | {r.in_audit} | {r.lost} | {r.duplicated} | "
        f"{'never' if r.recovery_s is None else f'{r.recovery_s:.1f}'} | {r.restarts} |"
        for r in rows
    ]
    return header + "\n".join(lines) + "\n"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Report the figures for the run's summary (also from an xdist worker, `make test`);
    the full form also writes them to tests/faults/results/latest.md."""
    if not RESULTS:
        return
    form = "full" if timing() is not QUICK else "quick"
    text = _table(RESULTS)
    if form == "full":
        RESULTS_FILE.parent.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        RESULTS_FILE.write_text(
            f"# Fault catalogue: latest full run\n\n{stamp}, `make test-faults` "
            f"(`CONSENTRY_FAULTS_FULL=1 pytest tests/faults`), {os.cpu_count()} cores.\n\n" + text
        )
        text += f"written to {RESULTS_FILE}\n"
    report_section(session.config, f"fault catalogue ({form} form)", text)
