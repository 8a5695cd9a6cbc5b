"""One benchmark run: start the whole stack, warm the pipeline up, run the scenarios, report."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import audit_throughput, consent_api, cpu, report, scenarios
from bench.audit import AuditFollower, BenchError, subject_refs
from bench.rawhttp import HttpConnection, RequestBuilder
from consentry.devstack.postgres import drop_database
from consentry.devstack.services import SERVICES, Service
from consentry.devstack.stack import DevStack, DevStackSettings
from consentry.eventing.topics import dead_letter_topic

WARMUP_SUBJECTS = 24  # enough to touch every partition, so the appender is on all of them
WARMUP_TIMEOUT_S = 120.0


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run (see `python -m bench --help`)."""

    duration: float = 10.0
    warmup: float = 2.0
    concurrency: tuple[int, ...] = (16, 64)
    rate: float = 50.0
    skip_propagation: bool = False
    timeout: float = 30.0
    results_dir: Path = scenarios.ROOT / "bench" / "results"
    keep_logs: bool = False
    audit_throughput: bool = True  # bench.audit_throughput, on a stack of its own, afterwards
    audit_events: int = 100_000
    # The consent API scenarios (bench.consent_api) and the pgbench ceiling.
    consent_api: bool = True
    capture_concurrency: tuple[int, ...] = (16, 64)
    unloaded_duration: float = 5.0
    check_concurrency: int = 64
    batch_concurrency: int = 2
    batch_size: int = 10_000
    pgbench: bool = True
    pgbench_duration: float = 10.0
    analyze: bool = True  # ANALYZE the service databases before those scenarios
    # Embedded PostgreSQL with fsync and synchronous commit on, as in production: commit-bound
    # figures (and the pgbench ceiling) mean little without them.
    durable: bool = True
    api_workers: int = 1  # CONSENTRY_HTTP_WORKERS of the API processes


def progress(message: str) -> None:
    """A progress line on stderr (stdout gets the markdown summary)."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by the service processes) for the block."""
    saved = {name: os.environ.get(name) for name in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _endpoint(url: str) -> scenarios.Endpoint:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return scenarios.Endpoint(parts.hostname, parts.port)


async def run(opts: Options) -> dict[str, Any]:
    """Run every scenario against a fresh stack; return the results (also written to disk)."""
    run_id = secrets.token_hex(3)
    settings = DevStackSettings(  # CONSENTRY_* URLs honoured
        consent_port=0, audit_port=0, preferences_port=0, subprocessors_port=0
    )
    names: dict[str, str] = {}
    env: dict[str, str] = {"CONSENTRY_HTTP_WORKERS": str(opts.api_workers)}
    services: list[Service] = list(SERVICES)
    if settings.database_url:  # a real server: never touch its consentry_* databases
        names = {"consent": f"bench_{run_id}_consent", "audit": f"bench_{run_id}_audit"}
    if settings.kafka_bootstrap_servers:  # a real cluster: never join the real appender group
        group = f"bench-{run_id}-audit-appender"
        env["CONSENTRY_APPENDER_GROUP_ID"] = group
        services = [
            dataclasses.replace(s, topics=(*s.topics, dead_letter_topic(group)))
            if s.name == "audit"
            else s
            for s in services
        ]
    quiet = await asyncio.to_thread(cpu.busy_now, 2.0)
    if quiet["busy"] > report.BUSY_WARNING:
        progress(f"warning: the machine is {quiet['busy']:.0f} % busy before the start")
    logs = Path(tempfile.mkdtemp(prefix="consentry-bench-logs-"))
    ok = False
    progress(f"starting the stack (service logs in {logs})")
    try:
        with _environ(env), (logs / "devstack.log").open("w") as out:
            stack = DevStack(
                settings,
                services=services,
                throwaway=True,
                durable=opts.durable,
                database_names=names or None,
                log_dir=logs,
                out=out,
            )
            async with stack:
                results = await _measure(stack, opts, run_id, settings)
        results["machine_before_start"] = quiet
        results["service_log_problems"] = _log_problems(logs)
        ok = True
    finally:
        if names:
            for name in names.values():
                with contextlib.suppress(Exception):
                    await drop_database(settings.database_url or "", name)
        if ok and not opts.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            progress(f"service logs kept in {logs}")
    if opts.audit_throughput:
        progress(f"audit appender throughput, {opts.audit_events} events (bench.audit_throughput)")
        results["audit_throughput"] = await audit_throughput.run(
            audit_throughput.Options(
                events=opts.audit_events,
                ceiling_entries=opts.audit_events // 5,
                results_dir=opts.results_dir,
                keep_logs=opts.keep_logs,
            )
        )
    text = report.markdown(results)
    if opts.audit_throughput:
        text += "\n" + audit_throughput.markdown(results["audit_throughput"], level=2)
    for path in report.write(results, opts.results_dir, text):
        progress(f"wrote {path}")
    print(text, end="", flush=True)
    return results


async def _measure(
    stack: DevStack, opts: Options, run_id: str, settings: DevStackSettings
) -> dict[str, Any]:
    consent, audit = _endpoint(stack.api_url("consent")), _endpoint(stack.api_url("audit"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    follower = AuditFollower(
        HttpConnection(audit.host, audit.port), RequestBuilder(audit.host, audit.port)
    )
    prefix = f"bench-{run_id}"
    policy = await consent_api.publish_policy(consent)  # writes are refused without one
    progress("warming up: waiting for the audit appender to append a first batch")
    warmed = await _warm_pipeline(consent, follower, prefix)
    head = follower.after
    results: dict[str, Any] = {
        "stamp": stamp,
        "run_id": run_id,
        "machine": await report.machine_info(stack.server_dsn),
        "postgres": "external server" if settings.database_url else _EMBEDDED_PG,
        "broker": "external" if settings.kafka_bootstrap_servers else _EMBEDDED_BROKER,
        "parameters": {**dataclasses.asdict(opts), "results_dir": _shown(opts.results_dir)},
        "pipeline_warmup_s": warmed,
        "policy_version": policy,
        "throughput": [],
    }
    for concurrency in opts.concurrency:
        progress(f"consent writes at concurrency {concurrency} ({opts.warmup}+{opts.duration} s)")
        result = await scenarios.throughput(
            consent,
            follower,
            head,
            concurrency,
            prefix=prefix,
            duration=opts.duration,
            warmup=opts.warmup,
        )
        head += result["ok_total"]
        results["throughput"].append(result)
        progress(f"  {result['rps']} req/s, errors {result['errors']}")
    if opts.consent_api:
        results["consent_api"], head = await consent_api.measure(
            consent,
            follower,
            head,
            prefix=f"{prefix}-api",
            server_dsn=stack.server_dsn,
            databases=[stack.database_dsn("consent"), stack.database_dsn("audit")],
            analyze=opts.analyze,
            duration=opts.duration,
            warmup=opts.warmup,
            capture_concurrency=opts.capture_concurrency,
            unloaded_duration=opts.unloaded_duration,
            check_concurrency=opts.check_concurrency,
            batch_concurrency=opts.batch_concurrency,
            batch_size=opts.batch_size,
            pgbench=opts.pgbench,
            pgbench_duration=opts.pgbench_duration,
        )
    if not opts.skip_propagation:
        progress(f"consent → audit propagation at {opts.rate:g}/s for {opts.duration} s")
        results["propagation"] = await scenarios.propagation(
            consent,
            follower,
            rate=opts.rate,
            duration=opts.duration,
            prefix=prefix,
            timeout=opts.timeout,
            consent_dsn=stack.database_dsn("consent"),
        )
    return results


_EMBEDDED_PG = "embedded throw-away cluster"
_EMBEDDED_BROKER = "embedded Tansu, memory storage (single process, nothing on disk)"


async def _warm_pipeline(
    consent: scenarios.Endpoint, follower: AuditFollower, prefix: str
) -> float:
    """Write a few decisions and wait until all are in the audit chain; return the seconds."""
    started = time.monotonic()
    builder = RequestBuilder(consent.host, consent.port)
    conn = HttpConnection(consent.host, consent.port)
    subjects = [f"{prefix}-warm-{n}" for n in range(WARMUP_SUBJECTS)]
    try:
        for subject in subjects:
            status, body = await conn.request(builder.put_consent(subject, "given"))
            if status != 200:
                raise BenchError(f"warm-up write failed: HTTP {status}: {body[:300]!r}")
    finally:
        await conn.close()
    refs = set((await subject_refs(consent.host, consent.port, subjects)).values())
    follower.keep = True
    arrived = await follower.until(lambda: refs <= follower.seen.keys(), WARMUP_TIMEOUT_S, 0.1)
    follower.keep, follower.seen = False, {}
    if not arrived:
        raise BenchError(f"warm-up events not in the audit chain after {WARMUP_TIMEOUT_S:.0f} s")
    return round(time.monotonic() - started, 2)


def _shown(path: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(scenarios.ROOT))
    except ValueError:
        return str(path)


def _log_problems(logs: Path) -> dict[str, dict[str, Any]]:
    """Per service log: how many warning/error lines, and the first few of them."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(logs.glob("*.log")):
        levels: Counter[str] = Counter()
        samples: list[str] = []
        for line in path.read_text(errors="replace").splitlines():
            try:
                level = str(json.loads(line).get("level", "")).lower()
            except (ValueError, AttributeError):
                level = "error" if "Traceback" in line else ""
            if level in ("warning", "error", "critical"):
                levels[level] += 1
                if len(samples) < 3:
                    samples.append(line[:400])
        if levels:
            found[path.stem] = {"counts": dict(levels), "samples": samples}
    return found
