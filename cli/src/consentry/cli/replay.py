"""`consentry replay SERVICE --since T`: queue a service's retained outbox events again.

The same operation as every service's own `replay` command (`consentry.eventing.relay.replay`:
retained rows created at or after T are marked unpublished; the service's running relay
publishes them again, in position order; consumers are idempotent so repeats are no-ops),
from one place for every service, with `--follow` showing the relay drain its backlog.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import asyncpg
import typer

from consentry.cli.config import load, state
from consentry.cli.output import CliError, ExitCode, JsonOption, Output, handle_errors
from consentry.eventing import relay
from consentry.eventing.settings import ENV_PREFIX, DatabaseSettings


class ServiceName(StrEnum):
    """The services with an outbox (each its own database)."""

    CONSENT = "consent"
    AUDIT = "audit"
    PREFERENCES = "preferences"
    SUBPROCESSORS = "subprocessors"


def database_url(service: ServiceName, option: str | None) -> str:
    """`--database-url`, else `CONSENTRY_<SERVICE>_DATABASE_URL`, else `CONSENTRY_DATABASE_URL`
    (as a service's own process sees it)."""
    own = option or os.environ.get(f"{ENV_PREFIX}{service.upper()}_DATABASE_URL")
    settings = load(DatabaseSettings, **({"database_url": own} if own else {}))
    return settings.database_url


async def _queue(dsn: str, since: datetime) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        queued = await relay.replay(conn, since)
        backlog, _ = await relay.backlog(conn)
        return queued, backlog
    finally:
        await conn.close()


async def _drain(dsn: str, output: Output, total: int, seconds: float) -> None:
    """Show the relay publishing the backlog (every unpublished row, the replayed ones and
    any new) until it is empty."""
    conn = await asyncpg.connect(dsn)
    deadline = time.monotonic() + seconds
    try:
        with output.progress() as progress:
            task = progress.add_task("relay publishing", total=total)
            while (backlog := (await relay.backlog(conn))[0]) > 0:
                progress.update(task, completed=max(total - backlog, 0))
                if time.monotonic() > deadline:
                    raise CliError(
                        f"{backlog} event(s) still unpublished after {seconds:g}s: is the "
                        "service's relay running?",
                        ExitCode.STILL_OPEN,
                    )
                await asyncio.sleep(0.25)  # polling the outbox: the relay has no progress feed
            progress.update(task, completed=total)
    finally:
        await conn.close()


@handle_errors
def replay(
    ctx: typer.Context,
    service: Annotated[ServiceName, typer.Argument(help="whose outbox")],
    since: Annotated[
        datetime,
        typer.Option(
            "--since",
            formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"],
            help="events created at or after this time (UTC unless an offset is given)",
        ),
    ],
    database: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="the service's database (default: CONSENTRY_<SERVICE>_DATABASE_URL, "
            "else CONSENTRY_DATABASE_URL)",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="wait until the relay has published them")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="seconds to follow")] = 300.0,
    as_json: JsonOption = False,
) -> None:
    """Re-publish a service's retained outbox events (e.g. after the broker lost its data)."""
    output = state(ctx, as_json=as_json).output
    dsn = database_url(service, database)
    moment = since if since.tzinfo else since.replace(tzinfo=UTC)
    queued, backlog = asyncio.run(_queue(dsn, moment))
    output.note(
        f"{service}: {queued} event(s) queued for re-publication since {moment.isoformat()}"
    )
    if follow and backlog:
        asyncio.run(_drain(dsn, output, max(queued, backlog), timeout))
    document = {"service": str(service), "since": moment.isoformat(), "queued": queued}
    output.result(document, lambda: output.line(f"{queued} event(s) queued"))
