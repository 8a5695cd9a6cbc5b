"""The ceiling of a 4-purpose write: `pgbench` running its SQL, one transaction per write.

Run by `python -m bench` on the stack's own PostgreSQL server, in a scratch database of its
own (the consent migrations applied, one tenant, dropped at the end), logged in as the consent
API's role (`consentry_consent_app`: row-level security applies, as for the API). One pgbench
transaction is what the API would do for one `POST /v1/subjects/{id}/consents` of 4 purposes
if it wrote each request in its own transaction, as single-row statements:

    BEGIN
    set_config('consentry.tenant_id', ...)           -- consent.db.set_tenant
    INSERT INTO subjects ... ON CONFLICT ... RETURNING  -- repository._LOCK_SUBJECTS, one row
    SELECT ... FROM consents WHERE subject ...        -- repository._CURRENT_OF_SUBJECTS
    4 x INSERT INTO consent_ledger                    -- repository._WRITE_GROUP, per row
    4 x INSERT INTO consents ... ON CONFLICT DO UPDATE
    UPDATE subjects SET version                       -- the end of _WRITE_GROUP
    N x INSERT INTO eventing_outbox                   -- the `queued` part of _WRITE_GROUP
    COMMIT

The outbox rows take no advisory key lock, as in `_WRITE_GROUP` (the subject's row lock
orders them; `eventing.outbox.add` would take one per row).

Shapes: `issue` has N = 1 outbox row (the shape issue 4 quotes: "4 ledger rows, 4 current-state
upserts, 1 outbox row"); `ours` has N = 4, one event per decision, which is what the API
writes. Each pgbench client writes its own subjects, each subject twice (variant 0, then
variant 1, which changes all 4 purposes), like the API scenario: half the transactions create
a subject, half update one. The outbox rows carry a real encoded event's headers and payload.
Protocols: `-M simple` and `-M prepared`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench import cpu
from bench.audit import BenchError
from bench.rawhttp import CAPTURE_PURPOSES, CAPTURES, POLICY_VERSION
from consentry.consent.consents.events import decision_event
from consentry.consent.consents.models import ConsentMethod, ConsentStatus, RecordedDecision
from consentry.devstack.postgres import (
    drop_database,
    ensure_database,
    ensure_login_role,
    postgres_bin_dir,
    with_user,
)
from consentry.devstack.services import ENV_DATABASE_URL, SERVICES
from consentry.eventing.envelope import encode

APP_ROLE = "consentry_consent_app"
GROUP_ROLE = "consentry_consent_rw"
SHAPES = {"issue": 1, "ours": 4}  # outbox rows per write
PROTOCOLS = ("simple", "prepared")
_TENANT = """
INSERT INTO tenants (id, name, subject_key_sealed) VALUES ($1, 'pgbench ceiling', $2)
"""
_COUNTS = "SELECT (SELECT count(*) FROM consent_ledger), (SELECT count(*) FROM eventing_outbox)"
_FIGURES = {
    "transactions": re.compile(r"number of transactions actually processed: (\d+)"),
    "failed": re.compile(r"number of failed transactions: (\d+)"),
    "latency_avg_ms": re.compile(r"latency average = ([\d.]+) ms"),
    "tps": re.compile(r"tps = ([\d.]+) \(without initial connection time\)"),
}


@dataclass(frozen=True)
class Run:
    """One pgbench run: the shape of the transaction and the query protocol."""

    shape: str
    protocol: str

    @property
    def outbox_rows(self) -> int:
        """Outbox rows per transaction."""
        return SHAPES[self.shape]


RUNS = tuple(Run(shape, protocol) for shape in SHAPES for protocol in PROTOCOLS)


def pgbench_binary() -> Path | None:
    """pgbench of the embedded server's version (pgserver wheel), else the one on PATH."""
    try:
        bundled = postgres_bin_dir() / "pgbench"
    except Exception:  # pgserver not installed: an external server
        bundled = None
    if bundled is not None and bundled.exists():
        return bundled
    found = shutil.which("pgbench")
    return Path(found) if found else None


def _hex(data: bytes) -> str:
    return f"decode('{data.hex()}', 'hex')"


def _sample_event(tenant: uuid.UUID) -> tuple[str, bytes]:
    """Headers (JSON) and payload of a real `consent.given` event, as the outbox stores them."""
    event = decision_event(
        RecordedDecision(
            event_id=uuid.uuid4(),
            tenant_id=tenant,
            subject_ref=secrets.token_hex(32),
            subject_version=1,
            purpose=CAPTURE_PURPOSES[0],
            status=ConsentStatus.GIVEN,
            policy_version=POLICY_VERSION,
            method=ConsentMethod.BANNER,
            source="web-banner",
            occurred_at=datetime.now(UTC),
            receipt_id=uuid.uuid4(),
        )
    )
    record = encode(event)
    headers = json.dumps({name: value.decode() for name, value in record.headers})
    return headers, record.value


def script(tenant: uuid.UUID, tag: str, outbox_rows: int, headers: str, payload: bytes) -> str:
    """The pgbench script of one write (needs `-D k=0`: k counts each client's writes).

    Literals that could contain a colon are hex-encoded: pgbench reads `:name` as a variable.
    """
    t = f"'{tenant}'::uuid"
    ref = f"encode(sha256(('{tag}/' || :client_id::text || '/' || :s::text)::bytea), 'hex')"

    def event_id(n: int) -> str:
        return f"md5('{tag}/' || :client_id::text || '/' || :k::text || '/{n}')::uuid"

    def status(purpose: str) -> str:
        first, second = CAPTURES[0][purpose], CAPTURES[1][purpose]
        return f"CASE WHEN :g::int = 0 THEN '{first}' ELSE '{second}' END"

    lines = [
        "\\set k :k + 1",
        "\\set s :k / 2",
        "\\set g :k % 2",
        "BEGIN;",
        f"SELECT set_config('consentry.tenant_id', '{tenant}', true);",
        f"INSERT INTO subjects (tenant_id, subject_ref) VALUES ({t}, {ref}) "
        "ON CONFLICT (tenant_id, subject_ref) DO UPDATE SET version = subjects.version "
        "RETURNING subject_ref, version, is_child, now() AS now \\gset",
        "SELECT subject_ref, purpose, status, policy_version, method, source, occurred_at, "
        "subject_version, updated_at, needs_reconsent "
        f"FROM consents WHERE tenant_id = {t} AND subject_ref = {ref};",
    ]
    for n, purpose in enumerate(CAPTURE_PURPOSES, 1):
        lines.append(
            "INSERT INTO consent_ledger (event_id, tenant_id, subject_ref, subject_version, "
            "purpose, status, policy_version, method, source, occurred_at, receipt_id, "
            f"client_fingerprint, gpc) VALUES ({event_id(n)}, {t}, {ref}, :version::bigint + {n}, "
            f"'{purpose}', {status(purpose)}, '{POLICY_VERSION}', 'banner', 'web-banner', now(), "
            f"{event_id(0)}, NULL, false);"
        )
    for n, purpose in enumerate(CAPTURE_PURPOSES, 1):
        lines.append(
            "INSERT INTO consents (tenant_id, subject_ref, purpose, status, policy_version, "
            "method, source, occurred_at, subject_version, event_id, needs_reconsent) "
            f"VALUES ({t}, {ref}, '{purpose}', {status(purpose)}, '{POLICY_VERSION}', 'banner', "
            f"'web-banner', now(), :version::bigint + {n}, {event_id(n)}, false) "
            "ON CONFLICT (tenant_id, subject_ref, purpose) DO UPDATE SET "
            "status = EXCLUDED.status, policy_version = EXCLUDED.policy_version, "
            "method = EXCLUDED.method, source = EXCLUDED.source, "
            "occurred_at = EXCLUDED.occurred_at, subject_version = EXCLUDED.subject_version, "
            "event_id = EXCLUDED.event_id, needs_reconsent = false, updated_at = now();"
        )
    lines.append(
        f"UPDATE subjects SET version = :version::bigint + {len(CAPTURE_PURPOSES)}, "
        f"updated_at = now() WHERE tenant_id = {t} AND subject_ref = {ref};"
    )
    key = f"convert_to('{tenant}/' || {ref}, 'UTF8')"
    for n in range(1, outbox_rows + 1):
        lines.append(
            "INSERT INTO eventing_outbox (event_id, topic, message_key, event_type, headers, "
            f"payload) VALUES ({event_id(n)}, 'consentry.consent.v1', {key}, "
            "CASE WHEN :g::int = 0 THEN 'consentry.consent.given.v1' "
            "ELSE 'consentry.consent.withdrawn.v1' END, "
            f"convert_from({_hex(headers.encode())}, 'UTF8')::jsonb, {_hex(payload)});"
        )
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


async def _migrate(dsn: str) -> None:
    """`python -m consentry.consent migrate` on `dsn` (its log lines kept off our stdout)."""
    consent = next(service for service in SERVICES if service.name == "consent")
    proc = await asyncio.create_subprocess_exec(
        *consent.migrate,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, ENV_DATABASE_URL: dsn},
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"migrating the pgbench database failed:\n{out.decode()[-2000:]}")


async def _prepare(server_dsn: str, name: str) -> tuple[str, uuid.UUID]:
    """The scratch database, migrated, with one tenant; (its DSN, the tenant id)."""
    dsn = await ensure_database(server_dsn, name)
    await _migrate(dsn)
    await ensure_login_role(dsn, APP_ROLE, GROUP_ROLE)
    tenant = uuid.uuid4()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:  # the owner: the tenants table's policy does not bind a superuser
        await conn.execute(_TENANT, tenant, secrets.token_bytes(61))
    finally:
        await conn.close()
    return dsn, tenant


async def _counts(dsn: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        row = await conn.fetchrow(_COUNTS)
    finally:
        await conn.close()
    assert row is not None
    return int(row[0]), int(row[1])


Samples = list[tuple[float, cpu.Snapshot]]


async def _pgbench(
    binary: Path, argv: Sequence[str], seconds: float, samples: Samples | None = None
) -> tuple[int, str]:
    """Run pgbench; with `samples`, take CPU snapshots 1 s after the start and 1 s before
    the end (pgbench's connections and their backends exist only while it runs)."""
    proc = await asyncio.create_subprocess_exec(
        str(binary),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        communicate = asyncio.ensure_future(proc.communicate())
        if samples is not None and seconds > 2:
            for delay in (1.0, seconds - 2.0):
                await asyncio.wait({communicate}, timeout=delay)
                if not communicate.done():
                    samples.append((time.perf_counter(), cpu.snapshot()))
        out, _ = await asyncio.wait_for(communicate, timeout=seconds + 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode or 0, out.decode(errors="replace")


async def _one(
    binary: Path, dsn: str, path: Path, run: Run, *, clients: int, threads: int, duration: float
) -> dict[str, Any]:
    argv = ["-n", "-c", str(clients), "-j", str(threads), "-T", str(max(1, round(duration)))]
    argv += ["-M", run.protocol, "-D", "k=0", "-f", str(path), with_user(dsn, APP_ROLE)]
    ledger0, outbox0 = await _counts(dsn)
    samples: Samples = []
    code, output = await _pgbench(binary, argv, max(1, round(duration)), samples)
    ledger1, outbox1 = await _counts(dsn)
    figures: dict[str, float | None] = {}
    for name, pattern in _FIGURES.items():
        match = pattern.search(output)
        figures[name] = float(match.group(1)) if match else None
    transactions = int(figures["transactions"] or 0)
    ledger, outbox = ledger1 - ledger0, outbox1 - outbox0
    result: dict[str, Any] = {
        "shape": run.shape,
        "protocol": run.protocol,
        "outbox_rows_per_write": run.outbox_rows,
        "clients": clients,
        "threads": threads,
        "duration_s": max(1, round(duration)),
        "exit_code": code,
        "tps": figures["tps"],
        "transactions": transactions,
        "failed_transactions": int(figures["failed"] or 0),
        "latency_avg_ms": figures["latency_avg_ms"],
        "ledger_rows": ledger,
        "outbox_rows": outbox,
        # every transaction wrote what it should: 4 ledger rows and N outbox rows
        "rows_verified": transactions > 0
        and ledger == len(CAPTURE_PURPOSES) * transactions
        and outbox == run.outbox_rows * transactions,
    }
    if len(samples) == 2:  # CPU over the middle of the run, connections established
        (t0, before), (t1, after) = samples
        result["cpu_window_s"] = round(t1 - t0, 3)
        result["cpu_percent_of_one_core"] = cpu.usage(before, after, t1 - t0)
        result["machine_cpu_percent"] = cpu.machine(before, after)
    if code != 0 or figures["tps"] is None:
        result["output_tail"] = output[-2000:]
    return result


async def measure(
    server_dsn: str, *, duration: float = 10.0, clients: int = 64, threads: int = 2
) -> dict[str, Any]:
    """Every pgbench run of `RUNS`, in a scratch database created and dropped here."""
    binary = pgbench_binary()
    if binary is None:
        return {"skipped": "no pgbench binary (pgserver wheel or PATH)"}
    version = (await _pgbench(binary, ["--version"], 0))[1].strip()
    name = f"bench_pgbench_{secrets.token_hex(3)}"
    scripts = Path(tempfile.mkdtemp(prefix="consentry-pgbench-"))
    runs = []
    try:
        dsn, tenant = await _prepare(server_dsn, name)
        headers, payload = _sample_event(tenant)
        for index, run in enumerate(RUNS):
            path = scripts / f"write-{run.shape}-{run.protocol}.sql"
            tag = f"r{index}"  # subjects of one run are new to it
            path.write_text(script(tenant, tag, run.outbox_rows, headers, payload))
            runs.append(
                await _one(
                    binary, dsn, path, run, clients=clients, threads=threads, duration=duration
                )
            )
    finally:
        await drop_database(server_dsn, name)
        shutil.rmtree(scripts, ignore_errors=True)
    return {"pgbench": str(binary), "version": version, "runs": runs}


def markdown(ceiling: dict[str, Any], write_rps: float | None) -> list[str]:
    """The ceiling as markdown lines (a `###` section); `write_rps`: our 4-purpose writes/s."""
    if "skipped" in ceiling:
        return ["### Ceiling: pgbench", "", f"Not measured: {ceiling['skipped']}."]
    runs = ceiling["runs"]
    first = runs[0] if runs else {"clients": "?", "threads": "?", "duration_s": "?"}
    lines = [
        "### Ceiling: pgbench, the SQL of one 4-purpose write, one transaction per write",
        "",
        f"{ceiling['version']}, `-c {first['clients']} -j {first['threads']} "
        f"-T {first['duration_s']}`, against a scratch database on the same server, as the "
        "API's role (row-level security on). One transaction = set tenant, upsert/lock the "
        "subject, read its current state, 4 ledger inserts, 4 current-state upserts, the "
        "subject's version, N outbox rows, as single-row "
        "statements (`bench/pgbench_ceiling.py`). The services are idle meanwhile; pgbench "
        "itself runs on the same 2 cores. CPU is sampled from 1 s after the start to 1 s "
        "before the end.",
        "",
        "| shape | protocol | tps | latency avg ms | failed | rows verified | pgbench CPU % "
        "| postgres CPU % | other processes CPU % | machine busy | our write req/s ÷ tps |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        usage = run.get("cpu_percent_of_one_core", {})
        busy = run.get("machine_cpu_percent", {}).get("busy")
        tps = run["tps"]
        ratio = f"{write_rps / tps:.2f}" if write_rps and tps else "-"
        shape = f"{run['shape']} ({run['outbox_rows_per_write']} outbox row"
        shape += "s)" if run["outbox_rows_per_write"] > 1 else ")"
        lines.append(
            f"| {shape} | {run['protocol']} | {tps or 0:,.0f} | {run['latency_avg_ms'] or 0:.1f} "
            f"| {run['failed_transactions']} | {'yes' if run['rows_verified'] else '**no**'} "
            f"| {usage.get('pgbench', 0.0):.0f} | {usage.get('postgres', 0.0):.0f} "
            f"| {usage.get(cpu.OTHER, 0.0):.0f} | {'-' if busy is None else f'{busy:.0f} %'} "
            f"| {ratio} |"
        )
    lines += [
        "",
        "**Not the same thing as the API's writes:** the API does not run one transaction per "
        "request. Its group-commit writer (`consents/writer.py`) records the captures of "
        "concurrent requests together, with multi-row statements, in a few transactions at a "
        "time, so it can exceed this one-transaction-per-write ceiling; a ratio above 1 means "
        "that, not a faster database. The API's figure also includes HTTP, validation, the "
        "signed receipt, and the relay and audit appender running on the same cores.",
    ]
    return lines
