"""PostgreSQL immediate restart under load: `pg_ctl stop -m immediate` (no shutdown
checkpoint, every backend killed, crash recovery on start), down for a while, started again.

The case needs a server it may crash, so it runs its own embedded PostgreSQL (durable:
`fsync` and synchronous commit on, or an immediate stop would lose acknowledged commits by
configuration, not by fault) and its own stack on it, whatever server the session uses.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from consentry.devstack.pgdata import system_user
from consentry.devstack.postgres import EmbeddedPostgres, postgres_bin_dir
from consentry.devstack.spawning import free_port

from .harness import FaultStack, Load, WebhookSink, recover, timing

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(400)]

DOWN_SECONDS = 2.0  # how long PostgreSQL stays down


@pytest.fixture(scope="module")
def crashable_postgres() -> Iterator[tuple[EmbeddedPostgres, Path]]:
    """A durable PostgreSQL of this module's own, its data kept across restarts."""
    # Not pytest's tmp_path: as root, PostgreSQL runs as `pgserver`, which cannot traverse
    # /tmp/pytest-of-root (mode 0700).
    base = Path(tempfile.mkdtemp(prefix="ct-faults-pg-"))
    base.chmod(0o755)
    data = base / "pgdata"
    server = EmbeddedPostgres(data, durable=True, port=free_port())
    try:
        with server:
            yield server, data
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def restart_stack(
    crashable_postgres: tuple[EmbeddedPostgres, Path], tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[FaultStack]:
    server, _ = crashable_postgres
    logs = tmp_path_factory.mktemp("pg-restart-logs")
    async with FaultStack(server.dsn, logs, label="pgr") as stack:
        await stack.prepare_tenant()
        yield stack


@pytest.fixture(scope="module")
def restart_sink(restart_stack: FaultStack) -> Iterator[WebhookSink]:
    with WebhookSink() as sink:
        yield sink


def _stop_immediately(data: Path) -> None:
    """`pg_ctl stop -m immediate`, as the user PostgreSQL runs as."""
    user = system_user()
    subprocess.run(
        [str(postgres_bin_dir() / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"],
        check=True,
        capture_output=True,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
    )


async def test_postgres_immediate_restart(
    crashable_postgres: tuple[EmbeddedPostgres, Path],
    restart_stack: FaultStack,
    restart_sink: WebhookSink,
) -> None:
    server, data = crashable_postgres
    await restart_sink.register(restart_stack)
    form = timing()
    load = await Load.prepare(restart_stack)
    async with load.running():
        await load.run_for(form.before_fault)
        fault_at = time.monotonic()
        dsn = server.dsn
        await asyncio.to_thread(_stop_immediately, data)
        await asyncio.to_thread(server.stop)  # reaps the postmaster, keeps the data
        await load.run_for(DOWN_SECONDS)
        assert await asyncio.to_thread(server.start) == dsn  # same port, crash recovery
        await load.run_for(form.after_fault)
    await restart_stack.wait_running()
    row = await recover(
        restart_stack, load, "PostgreSQL immediate restart", fault_at, sink=restart_sink
    )
    assert load.accepted, "the load had nothing accepted: the case would prove nothing"
    assert load.failed, "nothing failed while PostgreSQL was down: was it down?"
    assert row.ok, (row.failures, load.failed)
    assert (row.lost, row.duplicated) == (0, 0)
