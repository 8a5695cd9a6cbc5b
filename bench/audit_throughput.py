"""Audit appender throughput: entries/s while it drains a backlog, and append→checkpoint latency.

    uv run python -m bench.audit_throughput [--events 200000] [--tenants 8] [--with-relay]

Starts PostgreSQL and the broker through the dev stack (no service process), puts `--events`
valid consent events on the consent topic, then starts the audit appender as a real process
(logged in with the append-only role) and waits until every event is in the chain and covered
by a signed checkpoint. From the audit database it reports:

- entries/s from the first to the last append (`appended_at` of the audit rows), and per
  wall-clock second;
- append → checkpoint latency: for each entry, the first signed checkpoint covering it (the
  `created_at` of its outbox row, written in the signing transaction) minus `appended_at`,
  split by what triggered the checkpoint (the tree grew by N at the end of a batch, or the
  T-second timer for the last entries of the backlog);
- CPU per process group over the append window;
- that the chains verify and hold every event once.

The audit relay does not run unless `--with-relay`: on a small machine it takes its CPU from
the same cores. Then `bench.audit_ceiling` measures the database alone, so a reader sees
where the ceiling is. Results: `results/audit_throughput.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
from aiokafka import AIOKafkaProducer

from bench import audit_ceiling, cpu, report
from bench.audit import BenchError
from bench.stats import summary
from consentry.audit.chain.service import verify_tenant
from consentry.audit.settings import AppenderSettings
from consentry.audit.v1 import audit_pb2
from consentry.devstack.postgres import drop_database, with_user
from consentry.devstack.services import SERVICES, child_env
from consentry.devstack.stack import STARTUP_FAILURES, DevStack, DevStackSettings
from consentry.eventing import catalogue, topics
from consentry.eventing.envelope import encode
from consentry.eventing.testing import consent_event

RESULTS = Path(__file__).parent / "results"
APP_ROLE = "consentry_audit_app"
PRODUCE_CHUNK = 5000
_FAILURES: tuple[type[BaseException], ...] = (BenchError, *STARTUP_FAILURES)
Wire = tuple[str, bytes, bytes, tuple[tuple[str, bytes], ...]]


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run (see `python -m bench.audit_throughput --help`)."""

    events: int = 200_000
    tenants: int = 8
    appenders: int = 1
    relay: bool = False
    batch_append: bool = True
    max_records: int | None = None  # None: the appender's default
    pipeline: int | None = None  # None: the appender's default
    lanes: int | None = None  # None: the appender's default
    checkpoint_every: int = 1000
    checkpoint_interval: float = 10.0
    ceiling_entries: int = 40_000
    ceiling_batch: int = 1000
    timeout: float = 300.0
    results_dir: Path = RESULTS
    keep_logs: bool = False


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"bench.audit_throughput: {message}", file=sys.stderr, flush=True)


def backlog(opts: Options) -> list[Wire]:
    """The events to append, encoded for the wire: subjects with four decisions each, spread
    over the tenants; each subject's decisions in version order (one partition per subject)."""
    tenants = [str(uuid.uuid4()) for _ in range(opts.tenants)]
    subjects = max(1, opts.events // 4)
    refs = [secrets.token_hex(32) for _ in range(subjects)]
    records = []
    for index in range(opts.events):
        subject, version = index % subjects, index // subjects + 1
        event = consent_event(
            tenants[subject % len(tenants)],
            refs[subject],
            version,
            given=version % 2 == 1,
            source="/consentry/consent",
        )
        record = encode(event)
        assert record.key is not None
        records.append((record.topic, record.key, record.value, record.headers))
    return records


async def produce(bootstrap: str, records: Sequence[Wire]) -> float:
    """Put the records on their topic (acks=all); return the seconds it took."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20
    )
    await producer.start()
    started = time.perf_counter()
    try:
        for offset in range(0, len(records), PRODUCE_CHUNK):
            sent = [
                await producer.send(topic, value=value, key=key, headers=list(headers))
                for topic, key, value, headers in records[offset : offset + PRODUCE_CHUNK]
            ]
            await asyncio.gather(*sent)
    finally:
        await producer.stop()
    return time.perf_counter() - started


@contextlib.asynccontextmanager
async def service_process(
    command: str, env: dict[str, str], log: IO[bytes]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m consentry.audit COMMAND` with `env`, stopped with SIGTERM at the end."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consentry.audit", command, env=env, stdout=log, stderr=log
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


_APPENDED = "SELECT coalesce(sum(seq), 0) FROM audit_chain_heads"
_UNCOVERED = """
SELECT coalesce(sum(h.seq - coalesce(c.size, 0)), 0) FROM audit_chain_heads h
LEFT JOIN (SELECT tenant_id, max(tree_size) AS size FROM audit_checkpoints GROUP BY tenant_id) c
       ON c.tenant_id = h.tenant_id
"""


def _appender_env(stack: DevStack, opts: Options) -> dict[str, str]:
    env = {
        **os.environ,
        **child_env(
            database_dsn=with_user(stack.database_dsn("audit"), APP_ROLE),
            bootstrap=stack.bootstrap,
            http_host="",
            http_port=None,
        ),
        "CONSENTRY_APPENDER_BATCH_APPEND": "true" if opts.batch_append else "false",
        "CONSENTRY_AUDIT_CHECKPOINT_EVERY": str(opts.checkpoint_every),
        "CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS": str(opts.checkpoint_interval),
    }
    for name, value in (
        ("MAX_RECORDS", opts.max_records),
        ("PIPELINE", opts.pipeline),
        ("LANES", opts.lanes),
    ):
        if value is not None:
            env[f"CONSENTRY_APPENDER_{name}"] = str(value)
    return env


async def append_backlog(stack: DevStack, opts: Options, logs: Path) -> dict[str, Any]:
    """Run the appender (and the relay) until every event is appended and checkpointed."""
    env = _appender_env(stack, opts)
    conn = await asyncpg.connect(stack.database_dsn("audit"))
    marks: dict[str, tuple[float, cpu.Snapshot]] = {}
    deadline = time.monotonic() + opts.timeout
    try:
        async with contextlib.AsyncExitStack() as processes:
            commands = ["appender"] * opts.appenders + (["relay"] if opts.relay else [])
            for number, command in enumerate(commands):
                log = processes.enter_context((logs / f"audit.{command}-{number}.log").open("wb"))
                await processes.enter_async_context(service_process(command, env, log))
            done = 0
            while done < opts.events:
                if time.monotonic() > deadline:
                    raise BenchError(f"{done} of {opts.events} entries after {opts.timeout} s")
                done = int(await conn.fetchval(_APPENDED))
                if done and "first" not in marks:
                    marks["first"] = (time.perf_counter(), cpu.snapshot())
                await asyncio.sleep(0.05)
            marks["last"] = (time.perf_counter(), cpu.snapshot())
            progress("all appended; waiting for the checkpoints that cover the last entries")
            while await conn.fetchval(_UNCOVERED) > 0:
                if time.monotonic() > deadline:
                    raise BenchError(f"entries not checkpointed after {opts.timeout} s")
                await asyncio.sleep(0.1)
        return await _figures(conn, marks, opts)
    finally:
        await conn.close()


async def _checkpoints(conn: asyncpg.Connection) -> dict[str, list[tuple[int, float]]]:
    """Per tenant, (tree size, when it was signed) of every checkpoint, by size."""
    found: dict[str, list[tuple[int, float]]] = {}
    rows = await conn.fetch(
        "SELECT created_at, payload FROM eventing_outbox WHERE event_type = $1",
        catalogue.AUDIT_CHECKPOINT_SIGNED.name,
    )
    for row in rows:
        signed = audit_pb2.CheckpointSigned.FromString(row["payload"])
        found.setdefault(signed.tenant_id, []).append(
            (signed.tree_size, row["created_at"].timestamp())
        )
    return {tenant: sorted(sizes) for tenant, sizes in found.items()}


def _latencies(
    entries: Sequence[asyncpg.Record], signed: dict[str, list[tuple[int, float]]], every: int
) -> dict[str, list[float]]:
    """ms from each entry's append to the first checkpoint covering it, by trigger: `every`
    (the tree grew by N since the previous checkpoint) or `timer` (fewer: T seconds passed)."""
    out: dict[str, list[float]] = {"all": [], "every": [], "timer": []}
    for row in entries:
        sizes = signed.get(str(row["tenant_id"]), [])
        at = bisect.bisect_left(sizes, (row["seq"], 0.0))
        if at == len(sizes):
            continue
        ms = (sizes[at][1] - row["appended_at"].timestamp()) * 1000
        grown = sizes[at][0] - (sizes[at - 1][0] if at else 0)
        out["all"].append(ms)
        out["every" if grown >= every else "timer"].append(ms)
    return out


async def _figures(
    conn: asyncpg.Connection, marks: dict[str, tuple[float, cpu.Snapshot]], opts: Options
) -> dict[str, Any]:
    entries = await conn.fetch("SELECT tenant_id, seq, appended_at, event_id FROM audit_entries")
    signed = await _checkpoints(conn)
    latencies = _latencies(entries, signed, opts.checkpoint_every)
    times = sorted(row["appended_at"].timestamp() for row in entries)
    span = times[-1] - times[0] if len(times) > 1 else 0.0
    per_second = Counter(int(t - times[0]) for t in times)
    (t0, before), (t1, after) = marks["first"], marks["last"]
    usage = cpu.usage(before, after, t1 - t0)
    rate = len(times) / (t1 - t0)
    queued = await conn.fetchval(
        "SELECT count(*) FROM eventing_outbox WHERE event_type = $1",
        catalogue.AUDIT_ENTRY_APPENDED.name,
    )
    return {
        "entries": len(entries),
        "expected": opts.events,
        "distinct_event_ids": len({row["event_id"] for row in entries}),
        "entry_appended_events": queued,
        "first_to_last_append_s": round(span, 3),
        "entries_per_s": round((len(times) - 1) / span) if span else None,
        # Appends per wall-clock second from the first; the last, partial second left out.
        "entries_per_full_second": [per_second[s] for s in range(int(span))],
        "checkpoints": sum(len(sizes) for sizes in signed.values()),
        "append_to_checkpoint_ms": {key: summary(ms) for key, ms in latencies.items()},
        "cpu_percent_of_one_core": usage,
        "cpu_us_per_entry": {
            role: round(10_000 * share / rate, 1)
            for role, share in usage.items()
            if role != cpu.OTHER
        },
        "machine_cpu_percent": cpu.machine(before, after),
    }


async def _verify(dsn: str) -> list[str]:
    """Problems found by walking every chain (empty: all verify)."""
    conn = await asyncpg.connect(dsn)
    try:
        heads = await conn.fetch("SELECT tenant_id FROM audit_chain_heads")
        reports = [await verify_tenant(conn, row["tenant_id"]) for row in heads]
    finally:
        await conn.close()
    return [f"{r.tenant_id}: {r.broken}" for r in reports if not r.ok]


async def measure(opts: Options) -> dict[str, Any]:
    """Start PostgreSQL and the broker, fill the topic, run the appender; every figure."""
    settings = DevStackSettings(  # CONSENTRY_* URLs honoured
        consent_port=0, audit_port=0, preferences_port=0, subprocessors_port=0
    )
    names = {"audit": f"bench_{secrets.token_hex(3)}_audit"} if settings.database_url else {}
    (audit,) = [s for s in SERVICES if s.name == "audit"]
    service = dataclasses.replace(audit, topics=(*audit.topics, topics.CONSENT), processes=())
    quiet = await asyncio.to_thread(cpu.busy_now, 1.0)
    logs = Path(tempfile.mkdtemp(prefix="consentry-bench-audit-"))
    ok = False
    progress(f"encoding {opts.events} consent events for {opts.tenants} tenants")
    encoding = asyncio.create_task(asyncio.to_thread(backlog, opts))  # while the stack starts
    try:
        with (logs / "devstack.log").open("w") as out:
            progress("starting PostgreSQL and the broker")
            async with DevStack(
                settings,
                services=[service],
                start_processes=False,
                throwaway=True,
                durable=True,  # fsync and synchronous commit on, as in production
                app_roles=True,
                database_names=names or None,
                out=out,
            ) as stack:
                records = await encoding
                progress(f"producing {len(records)} events onto {topics.CONSENT}")
                produced_s = await produce(stack.bootstrap, records)
                del records
                relay = "with" if opts.relay else "without"
                progress(f"appending the backlog ({relay} the audit relay running)")
                appender = await append_backlog(stack, opts, logs)
                progress(f"  {appender['entries_per_s']} entries/s; verifying the chains")
                problems = await _verify(stack.database_dsn("audit"))
                ceiling = None
                if opts.ceiling_entries:
                    progress("database-level ceiling (audit_append_batch in a loop)")
                    ceiling = await audit_ceiling.measure(
                        stack.server_dsn, opts.ceiling_entries, opts.ceiling_batch, opts.tenants
                    )
                results = {
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": await report.machine_info(stack.server_dsn),
                    "machine_before_start": quiet,
                    "parameters": {**dataclasses.asdict(opts), "results_dir": "-"},
                    "produce_s": round(produced_s, 2),
                    "appender": appender,
                    "chain_problems": problems,
                    "ceiling": ceiling,
                }
        ok = True
    finally:
        if not encoding.done():
            encoding.cancel()  # the thread finishes on its own; its result is dropped
        for name in names.values():
            with contextlib.suppress(Exception):
                await drop_database(settings.database_url or "", name)
        if ok and not opts.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            progress(f"logs kept in {logs}")
    return results


async def run(opts: Options) -> dict[str, Any]:
    """Measure; write results/audit_throughput.{json,md}; return the results."""
    results = await measure(opts)
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    (opts.results_dir / "audit_throughput.json").write_text(json.dumps(results, indent=2) + "\n")
    (opts.results_dir / "audit_throughput.md").write_text(markdown(results))
    progress(f"wrote {opts.results_dir / 'audit_throughput.md'} (and .json)")
    return results


def markdown(results: dict[str, Any], level: int = 1) -> str:
    """The results as markdown; `level` is the heading level of its title."""
    a, p, m = results["appender"], results["parameters"], results["machine"]
    usage, per_entry = a["cpu_percent_of_one_core"], a["cpu_us_per_entry"]
    roles = [r for r in usage if r not in ("total", cpu.OTHER)]
    pg = m["postgresql"]
    path = (
        f"batched append: {_setting(p, 'max_records')} records per poll, "
        f"{_setting(p, 'lanes')} lane(s), up to {_setting(p, 'pipeline')} batches in flight"
        if p["batch_append"]
        else "one append per event"
    )
    relay = "running" if p["relay"] else "not running"
    title = "#" * level
    lines = [
        f"{title} Audit appender throughput, {results['when']}",
        "",
        f"{m['usable_cpus']} CPU cores ({m['cpu_model']}), Python {m['python']}, PostgreSQL "
        f"{pg['server_version']} (fsync={pg['fsync']}, synchronous_commit="
        f"{pg['synchronous_commit']}), Tansu (memory); all share these cores.",
        "",
        f"A backlog of {p['events']:,} consent events ({p['tenants']} tenants) on the consent "
        f"topic (produced in {results['produce_s']} s), then {p['appenders']} appender "
        f"process(es) started ({path}; checkpoints every {p['checkpoint_every']} entries or "
        f"{p['checkpoint_interval']:g} s; audit relay {relay}):",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| **entries/s, first to last append** | **{_count(a['entries_per_s'])}** |",
        "| entries per full second (min / median / max) | "
        f"{_spread(a['entries_per_full_second'])} |",
        f"| first to last append | {a['first_to_last_append_s']} s |",
        f"| entries / distinct event ids / events sent | {a['entries']:,} / "
        f"{a['distinct_event_ids']:,} / {a['expected']:,} |",
        f"| EntryAppended events queued for the audit topic | {a['entry_appended_events']:,} |",
        f"| chains verify | {'yes' if not results['chain_problems'] else 'NO'} |",
        f"| signed checkpoints | {a['checkpoints']} |",
    ]
    labels = {
        "all": "append → checkpoint, every entry",
        "every": f"… covered by a checkpoint after {p['checkpoint_every']} entries",
        "timer": f"… covered by the {p['checkpoint_interval']:g} s timer (the backlog's tail)",
    }
    for key, label in labels.items():
        s = a["append_to_checkpoint_ms"][key]
        lines.append(
            f"| {label}: n, p50 / p99 / max ms | {s['n']:,}, {_ms(s['p50'])} / "
            f"{_ms(s['p99'])} / {_ms(s['max'])} |"
        )
    lines += [
        "",
        "CPU over the append window, % of one core: "
        + ", ".join(f"{role} {usage[role]:.0f}" for role in roles)
        + f", other processes {usage.get(cpu.OTHER, 0):.0f}. CPU per entry, µs: "
        + ", ".join(f"{role} {per_entry[role]:.0f}" for role in roles)
        + f", **total {per_entry['total']:.0f}**.",
    ]
    # Busy time of the whole machine not spent by our processes (also short-lived processes
    # that the per-process table misses), in % of all cores.
    busy = a["machine_cpu_percent"]["busy"]
    others = max(0.0, busy - usage["total"] / m["usable_cpus"])
    lines += [
        "",
        f"The machine was {busy:.0f} % busy (all cores) during the window, "
        f"{others:.0f} % of it not by this benchmark.",
    ]
    if others > report.BUSY_WARNING:
        lines += [
            "",
            "**Warning: other work used the machine during the window; the figure is lower "
            "than on a quiet machine.**",
        ]
    if results["ceiling"]:
        lines += ["", *audit_ceiling.markdown(results["ceiling"], level + 1)]
    return "\n".join(lines) + "\n"


def _setting(parameters: dict[str, Any], name: str) -> int:
    """An appender setting as the run used it: the bench's option, or the appender's default."""
    value = parameters.get(name)
    if value is None:
        value = AppenderSettings.model_fields[f"appender_{name}"].default
    return int(value)


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _spread(values: list[int]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[0]:,} / {ordered[len(ordered) // 2]:,} / {ordered[-1]:,}"


def parse(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line into `Options`."""
    d = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench.audit_throughput", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--events", type=int, default=d.events, help="backlog size")
    parser.add_argument("--tenants", type=int, default=d.tenants)
    parser.add_argument("--appenders", type=int, default=d.appenders, help="processes (a group)")
    parser.add_argument(
        "--with-relay", action="store_true", help="run the audit relay during the append window"
    )
    parser.add_argument(
        "--per-record", action="store_true", help="the appender's per-record path, to compare"
    )
    parser.add_argument("--max-records", type=int, default=None, help="appender records per poll")
    parser.add_argument("--pipeline", type=int, default=None, help="appender batches in flight")
    parser.add_argument("--lanes", type=int, default=None, help="appender lanes (transactions)")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every)
    parser.add_argument("--checkpoint-interval", type=float, default=d.checkpoint_interval)
    parser.add_argument(
        "--ceiling-entries", type=int, default=d.ceiling_entries, help="0: skip the DB ceiling"
    )
    parser.add_argument("--ceiling-batch", type=int, default=d.ceiling_batch)
    parser.add_argument("--timeout", type=float, default=d.timeout)
    parser.add_argument("--results-dir", type=Path, default=d.results_dir)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if min(args.events, args.tenants, args.appenders, args.ceiling_batch) < 1:
        parser.error("--events, --tenants, --appenders and --ceiling-batch must be >= 1")
    if any(v is not None and v < 1 for v in (args.max_records, args.pipeline, args.lanes)):
        parser.error("--max-records, --pipeline and --lanes must be >= 1")
    return Options(
        events=args.events,
        tenants=args.tenants,
        appenders=args.appenders,
        relay=args.with_relay,
        batch_append=not args.per_record,
        max_records=args.max_records,
        pipeline=args.pipeline,
        lanes=args.lanes,
        checkpoint_every=args.checkpoint_every,
        checkpoint_interval=args.checkpoint_interval,
        ceiling_entries=args.ceiling_entries,
        ceiling_batch=args.ceiling_batch,
        timeout=args.timeout,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario; print the markdown; return the exit code."""
    try:
        results = asyncio.run(run(parse(argv)))
    except _FAILURES as exc:
        progress(f"failed: {type(exc).__name__}: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    print(markdown(results), end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
