"""What PostgreSQL is doing during a run: `pg_stat_activity` sampled, table counters compared.

A `WaitSampler` polls `pg_stat_activity` every `every` seconds on its own connection and
counts, per database, the sessions that are running (`active`, no wait event), waiting (by
wait event, e.g. `Lock:transactionid`, `Lock:object` — the cluster-wide NOTIFY queue lock —,
`IO:WALSync`), or idle inside a transaction, plus the statements most often seen running or
waiting. Averaged over the samples, a count is "sessions of that kind at any moment": where
the database time goes without pg_stat_statements (which needs a preload the embedded
server does not have). `table_stats`/`table_deltas` compare `pg_stat_user_tables` before and
after: the tables whose sequential scans read the most rows point at a missing index.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

_SAMPLE = """
SELECT datname, state, wait_event_type, wait_event, backend_type,
       coalesce(nullif(application_name, ''), '-') AS application_name,
       left(regexp_replace(query, '\\s+', ' ', 'g'), 90) AS query
FROM pg_stat_activity
WHERE backend_type IN ('client backend', 'autovacuum worker') AND pid <> pg_backend_pid()
  AND state IS DISTINCT FROM 'idle'
"""


class WaitSampler:
    """Counts of what the server's sessions were doing, sampled."""

    def __init__(self, server_dsn: str, every: float = 0.1) -> None:
        self._dsn = server_dsn
        self._every = every
        self.samples = 0
        self.kinds: Counter[tuple[str, str]] = Counter()  # (database, what)
        self.statements: Counter[tuple[str, str, str]] = Counter()  # (database, what, query)
        self.processes: Counter[tuple[str, str]] = Counter()  # (application_name, what)

    async def _run(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            while not stop.is_set():
                for row in await conn.fetch(_SAMPLE):
                    database = row["datname"] or "-"
                    what = _what(row)
                    self.kinds[(database, what)] += 1
                    self.statements[(database, what, row["query"] or "")] += 1
                    self.processes[(row["application_name"], what)] += 1
                self.samples += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self._every)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[WaitSampler]:
        """Sample until the block ends."""
        stop = asyncio.Event()
        task = asyncio.create_task(self._run(stop))
        try:
            yield self
        finally:
            stop.set()
            await task

    def summary(self, top: int = 12) -> dict[str, Any]:
        """Average sessions per (database, what) and the statements seen most."""
        n = max(self.samples, 1)
        return {
            "samples": self.samples,
            "sessions": [
                {"database": db, "what": what, "average": round(count / n, 2)}
                for (db, what), count in self.kinds.most_common()
            ],
            "statements": [
                {"database": db, "what": what, "query": query, "average": round(count / n, 2)}
                for (db, what, query), count in self.statements.most_common(top)
            ],
            "processes": [
                {"process": name, "what": what, "average": round(count / n, 2)}
                for (name, what), count in self.processes.most_common(top)
            ],
        }


def _what(row: asyncpg.Record) -> str:
    if row["backend_type"] == "autovacuum worker":
        return "autovacuum"
    if row["wait_event_type"] and row["wait_event_type"] != "Client":
        return f"{row['wait_event_type']}:{row['wait_event']}"
    if row["state"] == "active":
        return "running"
    return str(row["state"])


_BACKENDS = """
SELECT pid, backend_type, coalesce(application_name, '') AS application_name
FROM pg_stat_activity
"""


async def backend_labels(server_dsn: str) -> dict[int, str]:
    """A CPU label per PostgreSQL process (`cpu.relabel`): a session by the process it serves
    (its `application_name`, e.g. `postgres: consentry consent api`), the server's own
    processes by their type (`postgres: autovacuum worker`, `postgres: walwriter`)."""
    conn = await asyncpg.connect(server_dsn)
    try:
        rows = await conn.fetch(_BACKENDS)
    finally:
        await conn.close()
    labels = {}
    for row in rows:
        client = row["backend_type"] == "client backend"
        name = (row["application_name"] or "unnamed sessions") if client else row["backend_type"]
        labels[int(row["pid"])] = f"postgres: {name}"
    return labels


_TABLES = """
SELECT relname, seq_scan, seq_tup_read, coalesce(idx_scan, 0) AS idx_scan,
       coalesce(idx_tup_fetch, 0) AS idx_tup_fetch, n_tup_ins, n_tup_upd, n_tup_del
FROM pg_stat_user_tables
"""
_COUNTERS = (
    "seq_scan",
    "seq_tup_read",
    "idx_scan",
    "idx_tup_fetch",
    "n_tup_ins",
    "n_tup_upd",
    "n_tup_del",
)
TableStats = dict[tuple[str, str], dict[str, int]]


async def table_stats(dsns: dict[str, str]) -> TableStats:
    """`pg_stat_user_tables` of each database (name → DSN): per (database, table) counters.
    Sessions report their counts up to a second after a transaction ends: take the snapshot
    after the work has settled."""
    stats: TableStats = {}
    for name, dsn in dsns.items():
        conn = await asyncpg.connect(dsn)
        try:
            for row in await conn.fetch(_TABLES):
                stats[(name, row["relname"])] = {c: int(row[c]) for c in _COUNTERS}
        finally:
            await conn.close()
    return stats


def table_deltas(before: TableStats, after: TableStats, top: int = 8) -> list[dict[str, Any]]:
    """The tables whose sequential scans read the most rows between two snapshots (rows a
    missing index makes PostgreSQL read), with their other counters."""
    changed: list[tuple[tuple[str, str], dict[str, int]]] = []
    for key, counters in after.items():
        old = before.get(key, {})
        delta = {name: value - old.get(name, 0) for name, value in counters.items()}
        if any(delta.values()):
            changed.append((key, delta))
    changed.sort(key=lambda item: -item[1]["seq_tup_read"])
    return [{"database": db, "table": table, **delta} for (db, table), delta in changed[:top]]


_DATABASES = """
SELECT datname, xact_commit, tup_returned, tup_fetched, tup_inserted, tup_updated, tup_deleted
FROM pg_stat_database WHERE datname IS NOT NULL
"""
DatabaseStats = dict[str, dict[str, int]]


async def database_stats(server_dsn: str) -> DatabaseStats:
    """`pg_stat_database` per database: transactions committed and rows touched."""
    conn = await asyncpg.connect(server_dsn)
    try:
        rows = await conn.fetch(_DATABASES)
    finally:
        await conn.close()
    return {
        row["datname"]: {name: int(value) for name, value in row.items() if name != "datname"}
        for row in rows
    }


def database_deltas(before: DatabaseStats, after: DatabaseStats, per: int) -> dict[str, Any]:
    """Per database with activity: the counters' growth between two snapshots, and per unit
    of work (`per`: requests or subjects) the transactions committed."""
    deltas: dict[str, Any] = {}
    for name, counters in after.items():
        old = before.get(name, {})
        delta = {key: value - old.get(key, 0) for key, value in counters.items()}
        if delta["xact_commit"] > 0:
            deltas[name] = {
                **delta,
                "commits_per_unit": round(delta["xact_commit"] / max(per, 1), 2),
            }
    return deltas
