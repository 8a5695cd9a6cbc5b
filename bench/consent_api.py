"""The consent API scenarios of `make bench`: issue 4's performance targets.

With the whole stack running (relay, audit appender, audit relay included), in this order:

- `ANALYZE` of the consent and audit databases (unless `analyze` is off): the tables start
  empty, and a pooled connection that prepared a statement while a table was empty keeps
  the generic plan it chose then (a sequential scan) until the table is analyzed;
  autovacuum's first ANALYZE comes a minute or more into the run. A database in service has
  statistics; see bench/README.md;
- a probe: one 4-purpose capture, its answer checked (200, signed receipt, 4 states);
- 4-purpose writes (`POST /v1/subjects/{id}/consents`), closed loop at each
  `capture_concurrency` level (16, 64), then the wait until the audit chain holds every
  decision (4 entries per write): no backlog carries over into the next scenario;
- unloaded writes: the same at concurrency 1 (latency with nothing queued);
- single checks (`GET .../checks/{purpose}`), closed loop at `check_concurrency` (64), over the
  subjects the highest-concurrency write run created;
- batch checks (`POST /v1/checks`, `batch_size` pairs), closed loop at `batch_concurrency`;
- checks probed for correct answers (single and batch, subjects whose state is known);
- the ceiling: `bench.pgbench_ceiling` (pgbench with the SQL of one write).

Every write changes state: each load connection writes subject `<prefix>-m<c>-<conn>-<k>`
twice, variant 0 then variant 1 of `rawhttp.CAPTURES` (all 4 purposes differ), then moves to
k + 1: half the writes create a subject, half update one; each records 4 decisions.

Per scenario: req/s, latency, errors, CPU per process group (% of one core and ms per
request), the generator's own CPU, and the consent API process's RSS (psutil, sampled every
0.2 s). `markdown()` renders the targets table (goal, measured, pass/fail) and the details.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import psutil

from bench import cpu, pgbench_ceiling
from bench.audit import AuditFollower, BenchError
from bench.rawhttp import (
    CAPTURE_PURPOSES,
    CAPTURES,
    POLICY_VERSION,
    HttpConnection,
    ProtocolError,
    RequestBuilder,
)
from bench.scenarios import DRAIN_TIMEOUT_S, ROOT, Endpoint, run_generator
from consentry.consent.purposes.models import DEFAULT_PURPOSES

MIB = 2**20
RSS_INTERVAL_S = 0.2
POLICY = {
    "version": POLICY_VERSION,
    "url": f"https://example.com/privacy/{POLICY_VERSION}",
    "effective_on": "2026-11-01",
    "purposes": [{"purpose": p, "notice": f"What we do for {p}."} for p in DEFAULT_PURPOSES],
}
# Issue 4: "the best-known open-source peer, measured on a 2-core machine like this one".
PEER = "saves a 4-purpose consent at about 24 req/s (p99 1.4 s) and reads one at about 70 req/s"
TARGETS = {
    "write_rps": 2500.0,  # 4 purposes, receipt signed, at concurrency 64
    "write_p99_ms": 50.0,  # at concurrency 64
    "unloaded_p50_ms": 5.0,
    "check_rps": 5000.0,
    "batch_pairs_per_s": 200_000.0,
    "rss_mib": 120.0,
}
_CPU_ORDER = (
    "load generator",
    "consent api",
    "postgres",
    "consent relay",
    "consent intake",
    "policy scheduler",
    "audit appender",
    "audit relay",
    "audit api",
    "broker",
    "bench orchestrator",
)


async def publish_policy(consent: Endpoint) -> str:
    """Publish the dev tenant's policy version `POLICY_VERSION` (covering every default
    purpose): writes are refused until one is. 'published', or 'exists' (409)."""
    builder = RequestBuilder(consent.host, consent.port)
    conn = HttpConnection(consent.host, consent.port)
    try:
        status, body = await conn.request(builder.post_json("/v1/policy-versions", POLICY))
    finally:
        await conn.close()
    if status == 201:
        return "published"
    if status == 409:
        return "exists"
    raise BenchError(f"publishing policy version {POLICY_VERSION}: HTTP {status}: {body[:300]!r}")


async def analyze(dsns: list[str]) -> float:
    """`ANALYZE` each database (statistics; cached plans of every session are invalidated and
    planned again on next use); return the seconds it took."""
    started = time.perf_counter()
    for dsn in dsns:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()
    return round(time.perf_counter() - started, 2)


def api_processes() -> list[psutil.Process]:
    """The consent API's processes (children of this orchestrator): one, or with
    `CONSENTRY_HTTP_WORKERS` > 1 uvicorn's supervisor and its worker processes."""
    found = [p for p in psutil.Process().children(recursive=True) if cpu.role(p) == "consent api"]
    if not found:
        raise BenchError("the consent API process was not found among the bench's children")
    return found


def rss_of(procs: list[psutil.Process]) -> tuple[int, int]:
    """(RSS of the largest process, RSS summed over `procs`), in bytes."""
    sizes = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            sizes.append(proc.memory_info().rss)
    return (max(sizes), sum(sizes)) if sizes else (0, 0)


@contextlib.asynccontextmanager
async def rss_samples(procs: list[psutil.Process]) -> AsyncIterator[list[tuple[int, int]]]:
    """`rss_of(procs)`, sampled every RSS_INTERVAL_S while the block runs (and at its start
    and end)."""
    samples: list[tuple[int, int]] = []

    def sample() -> None:
        samples.append(rss_of(procs))

    async def loop() -> None:
        while True:
            sample()
            await asyncio.sleep(RSS_INTERVAL_S)

    task = asyncio.create_task(loop())
    try:
        yield samples
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sample()


def _mib(value: int) -> float:
    return round(value / MIB, 1)


async def closed(consent: Endpoint, kind: str, concurrency: int, **opts: Any) -> dict[str, Any]:
    """One closed-loop generator run of `kind`, with CPU over its window and the API's RSS."""
    samples: dict[str, tuple[float, cpu.Snapshot]] = {}

    def on_event(event: dict[str, Any]) -> None:
        samples[event["event"]] = (time.perf_counter(), cpu.snapshot())

    argv = ["closed", "--kind", kind, "--host", consent.host, "--port", str(consent.port)]
    argv += ["--prefix", opts["prefix"], "--concurrency", str(concurrency)]
    argv += ["--duration", str(opts["duration"]), "--warmup", str(opts["warmup"])]
    for name in ("subjects_prefix", "subjects_connections", "subjects_per_connection"):
        if name in opts:
            argv += ["--" + name.replace("_", "-"), str(opts[name])]
    if kind == "batch":
        argv += ["--batch-size", str(opts["batch_size"])]
    api = api_processes()
    async with rss_samples(api) as rss:
        result = await run_generator(argv, on_event)
    (t0, before), (t1, after) = samples["measure_start"], samples["measure_end"]
    result.pop("event")
    result["cpu_percent_of_one_core"] = cpu.usage(before, after, t1 - t0)
    result["machine_cpu_percent"] = cpu.machine(before, after)
    result["cpu_ms_per_request"] = {
        role: round(10 * share / result["rps"], 3) if result["rps"] else None
        for role, share in result["cpu_percent_of_one_core"].items()
        if role != cpu.OTHER
    }
    result["generator_cpu_percent"] = round(100 * result["generator_cpu_s"] / (t1 - t0), 1)
    handled = result["requests"]
    result["generator_us_per_request"] = (
        round(1e6 * result["generator_cpu_s"] / handled, 1) if handled else None
    )
    result["api_rss_mib"] = {  # max/end: of the largest API process; total: of all of them
        "processes": len(api),
        "max": _mib(max(one for one, _ in rss)),
        "end": _mib(rss[-1][0]),
        "total_max": _mib(max(total for _, total in rss)),
    }
    if kind == "batch":
        result["batch_size"] = opts["batch_size"]
        result["pairs_per_s"] = round(result["rps"] * opts["batch_size"])
    return result


async def _drain(follower: AuditFollower, result: dict[str, Any], expected_head: int) -> int:
    """Wait until the audit chain holds every decision of the run (4 per write)."""
    expected_head += len(CAPTURE_PURPOSES) * result["ok_total"]
    result["audit_drain_s"] = await follower.until_head(expected_head, DRAIN_TIMEOUT_S)
    result["audit_backlog_at_end"] = max(0, expected_head - follower.after)
    return expected_head


async def _probe_write(consent: Endpoint, subject: str) -> dict[str, Any]:
    """One 4-purpose capture: 200, a compact JWS receipt, the 4 states asked for."""
    builder = RequestBuilder(consent.host, consent.port)
    conn = HttpConnection(consent.host, consent.port)
    try:
        status, body = await conn.request(builder.post_consents(subject, 0))
    finally:
        await conn.close()
    if status != 200:
        raise BenchError(f"4-purpose write failed: HTTP {status}: {body[:300]!r}")
    answer = json.loads(body)
    states = {state["purpose"]: state["status"] for state in answer["consents"]}
    receipt = str(answer.get("receipt", ""))
    return {
        "status": status,
        "states_as_asked": states == CAPTURES[0],
        "receipt_is_jws": receipt.count(".") == 2 and len(receipt) > 100,
        "subject_version": answer["subject_version"],
        "response_bytes": len(body),
    }


async def _probe_checks(consent: Endpoint, subjects_prefix: str, conns: int) -> dict[str, Any]:
    """Checks of subjects written twice (k = 0 of the first 4 connections: variant 1 is their
    state): every single and batch answer must match it."""
    subjects = [f"{subjects_prefix}-{c}-0" for c in range(min(4, conns))]
    expected = {p: (CAPTURES[1][p] == "given") for p in CAPTURE_PURPOSES}
    builder = RequestBuilder(consent.host, consent.port)
    conn = HttpConnection(consent.host, consent.port)
    wrong: list[str] = []
    reasons: Counter[str] = Counter()
    try:
        for subject in subjects:
            for purpose in CAPTURE_PURPOSES:
                answer = await conn.get_json(builder.check(subject, purpose))
                reasons[answer["reason"]] += 1
                if answer["allowed"] is not expected[purpose]:
                    wrong.append(f"GET {subject}/{purpose}: {answer}")
        pairs = [{"subject_id": s, "purpose": p} for s in subjects for p in CAPTURE_PURPOSES]
        status, body = await conn.request(builder.post_json("/v1/checks", {"checks": pairs}))
    except (OSError, ProtocolError) as exc:
        raise BenchError(f"probing checks failed: {exc}") from exc
    finally:
        await conn.close()
    if status != 200:
        raise BenchError(f"batch check failed: HTTP {status}: {body[:300]!r}")
    results = json.loads(body)["results"]
    for pair, answer in zip(pairs, results, strict=True):
        if answer["allowed"] is not expected[pair["purpose"]]:
            wrong.append(f"POST /v1/checks {pair}: {answer}")
    return {"checked": 2 * len(pairs), "wrong": wrong, "single_reasons": dict(reasons)}


async def measure(
    consent: Endpoint,
    follower: AuditFollower,
    head: int,
    *,
    prefix: str,
    server_dsn: str,
    databases: list[str],
    **opts: Any,
) -> tuple[dict[str, Any], int]:
    """Every consent API scenario (see the module docstring); (results, new audit head).
    `databases`: DSNs of the service databases to ANALYZE first."""
    api = api_processes()
    results: dict[str, Any] = {"targets": TARGETS, "peer": PEER, "write_mix": _WRITE_MIX}
    if opts["analyze"]:
        _progress("ANALYZE of the service databases (statistics, fresh query plans)")
        results["analyze_s"] = await analyze(databases)
    else:
        results["analyze_s"] = None
    results["source"] = await _source()
    results["api_processes"] = len(api)
    results["api_rss_mib_before"] = _mib(rss_of(api)[0])
    common = {"duration": opts["duration"], "warmup": opts["warmup"]}
    results["probe_write"] = await _probe_write(consent, f"{prefix}-probe")
    head = await _drain(follower, {"ok_total": 1}, head)
    results["writes"] = []
    for concurrency in opts["capture_concurrency"]:
        _progress(f"4-purpose writes at concurrency {concurrency}")
        run = await closed(
            consent, "capture", concurrency, prefix=f"{prefix}-m{concurrency}", **common
        )
        head = await _drain(follower, run, head)
        results["writes"].append(run)
        _progress(f"  {run['rps']} req/s, errors {run['errors']}, audit {run['audit_drain_s']} s")
    _progress(f"unloaded 4-purpose writes (concurrency 1, {opts['unloaded_duration']} s)")
    unloaded = await closed(
        consent,
        "capture",
        1,
        prefix=f"{prefix}-u1",
        duration=opts["unloaded_duration"],
        warmup=1.0,
    )
    head = await _drain(follower, unloaded, head)
    results["unloaded"] = unloaded
    source = max(results["writes"], key=lambda run: run["concurrency"], default=unloaded)
    subjects = {
        "subjects_prefix": f"{prefix}-m{source['concurrency']}",
        "subjects_connections": source["concurrency"],
        "subjects_per_connection": max(1, source["subjects_per_connection"]),
    }
    results["check_subjects"] = source["concurrency"] * subjects["subjects_per_connection"]
    results["probe_checks"] = await _probe_checks(
        consent, subjects["subjects_prefix"], source["concurrency"]
    )
    _progress(f"single checks at concurrency {opts['check_concurrency']}")
    results["check"] = await closed(
        consent, "check", opts["check_concurrency"], prefix=prefix, **common, **subjects
    )
    _progress(f"  {results['check']['rps']} req/s, errors {results['check']['errors']}")
    _progress(
        f"batch checks of {opts['batch_size']} pairs at concurrency {opts['batch_concurrency']}"
    )
    results["batch"] = await closed(
        consent,
        "batch",
        opts["batch_concurrency"],
        prefix=prefix,
        batch_size=opts["batch_size"],
        **common,
        **subjects,
    )
    _progress(f"  {results['batch']['pairs_per_s']} pairs/s, errors {results['batch']['errors']}")
    memory = []
    for proc in api_processes():
        with contextlib.suppress(psutil.Error):
            memory.append(proc.memory_full_info())
    if memory:  # of the largest API process
        results["api_memory_after_mib"] = {
            "rss": _mib(max(m.rss for m in memory)),
            "uss": _mib(max(m.uss for m in memory)),
        }
    if opts["pgbench"]:
        _progress(
            f"pgbench ceiling ({len(pgbench_ceiling.RUNS)} runs of {opts['pgbench_duration']} s)"
        )
        results["pgbench_ceiling"] = await pgbench_ceiling.measure(
            server_dsn, duration=opts["pgbench_duration"]
        )
    return results, head


async def _source() -> dict[str, Any]:
    """The commit measured, and whether the service code differed from it (uncommitted)."""

    async def git(*argv: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *argv,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        out, _ = await proc.communicate()
        return out.decode().strip() if proc.returncode == 0 else ""

    try:
        commit = await git("rev-parse", "--short", "HEAD")
        changed = await git("status", "--porcelain", "--", "services", "libs")
    except OSError:
        return {"commit": None, "uncommitted_service_changes": None}
    return {
        "commit": commit or None,
        "uncommitted_service_changes": len(changed.splitlines()) if commit else None,
    }


_WRITE_MIX = (
    "each connection writes subject <prefix>-<conn>-<k> twice (variant 0, then variant 1, which "
    "differs in all 4 purposes), then k+1: half the writes create a subject, half update one; "
    "every write records 4 decisions"
)


def _progress(message: str) -> None:
    """A progress line on stderr, as `bench.run.progress` writes them."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- markdown


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("pass" if ok else "**FAIL**")


def _at_least(value: float | None, goal: float) -> bool | None:
    return None if value is None else value >= goal


def _at_most(value: float | None, goal: float) -> bool | None:
    return None if value is None else value <= goal


def _rss_max(results: dict[str, Any]) -> float | None:
    runs = [*results.get("writes", []), results.get("unloaded"), results.get("check")]
    runs.append(results.get("batch"))
    values = [r["api_rss_mib"]["max"] for r in runs if r and r["api_rss_mib"]["max"] is not None]
    return max(values) if values else None


def _top_write(results: dict[str, Any]) -> dict[str, Any] | None:
    """The write run at the highest concurrency (64 by default), which the targets name."""
    return max(results.get("writes", []), key=lambda r: r["concurrency"], default=None)


def _figure(run: dict[str, Any] | None, *path: str) -> float | None:
    """run[path[0]][path[1]]..., or None when the run did not happen."""
    value: Any = run
    for key in path:
        if value is None:
            return None
        value = value[key]
    return None if value is None else float(value)


def targets_table(results: dict[str, Any]) -> list[str]:
    """Target vs measured, one line per target, pass/fail."""
    t = results["targets"]
    top, unloaded = _top_write(results), results.get("unloaded")
    check, batch = results.get("check"), results.get("batch")
    rss = _rss_max(results)
    write_rps, write_p99 = _figure(top, "rps"), _figure(top, "latency_ms", "p99")
    unloaded_p50 = _figure(unloaded, "latency_ms", "p50")
    check_rps, pairs = _figure(check, "rps"), _figure(batch, "pairs_per_s")
    c = top["concurrency"] if top else "-"
    batch_label = "batch check"
    if batch:
        batch_label += (
            f" ({batch['batch_size']:,} pairs per request, concurrency {batch['concurrency']})"
        )
    rows = [
        (
            f"4-purpose writes (receipt signed), concurrency {c}",
            f"≥ {t['write_rps']:,.0f} req/s",
            f"{_fmt(write_rps, 0)} req/s",
            _at_least(write_rps, t["write_rps"]),
        ),
        (
            f"write p99 at concurrency {c}",
            f"≤ {t['write_p99_ms']:g} ms",
            f"{_fmt(write_p99)} ms",
            _at_most(write_p99, t["write_p99_ms"]),
        ),
        (
            "unloaded write p50 (concurrency 1)",
            f"≤ {t['unloaded_p50_ms']:g} ms",
            f"{_fmt(unloaded_p50)} ms",
            _at_most(unloaded_p50, t["unloaded_p50_ms"]),
        ),
        (
            f"single check, concurrency {check['concurrency'] if check else '-'}",
            f"≥ {t['check_rps']:,.0f} req/s",
            f"{_fmt(check_rps, 0)} req/s",
            _at_least(check_rps, t["check_rps"]),
        ),
        (
            batch_label,
            f"≥ {t['batch_pairs_per_s']:,.0f} pairs/s",
            f"{_fmt(pairs, 0)} pairs/s",
            _at_least(pairs, t["batch_pairs_per_s"]),
        ),
        (
            "consent API process RSS (the largest one), max during these runs",
            f"≤ {t['rss_mib']:g} MiB",
            f"{_fmt(rss)} MiB",
            _at_most(rss, t["rss_mib"]),
        ),
    ]
    lines = ["| target | goal | measured | |", "|---|---|---:|---|"]
    for label, goal, measured, ok in rows:
        lines.append(f"| {label} | {goal} | {measured} | {_verdict(ok)} |")
    ceiling = results.get("pgbench_ceiling")
    if ceiling and "runs" in ceiling and top:
        parts = []
        for run in ceiling["runs"]:
            if run["tps"]:
                parts.append(
                    f"{run['shape']}/{run['protocol']} {run['tps']:,.0f} tps "
                    f"(ours ÷ it = {top['rps'] / run['tps']:.2f})"
                )
        lines.append(
            "| ceiling: pgbench, same SQL, one transaction per write (see below) | report | "
            + "; ".join(parts)
            + " | - |"
        )
    return lines


def markdown(results: dict[str, Any]) -> list[str]:
    """The consent API section of latest.md."""
    lines = [
        "## Consent API: issue 4's targets",
        "",
        "With the consent relay, the audit appender and the audit relay running, on the same "
        "cores as everything else (see the caveats in bench/README.md). For reference, issue 4: "
        f"the best-known open-source peer {PEER} on a 2-core machine. " + _context(results),
        "",
        *targets_table(results),
        "",
        f"Writes: {results['write_mix']}. Probe write: "
        + _probe_text(results["probe_write"], results.get("probe_checks")),
        "",
        *_runs_table(results),
        "",
        *_cpu_table(results),
        "",
        *_generator_note(results),
    ]
    ceiling = results.get("pgbench_ceiling")
    if ceiling:
        top = _top_write(results)
        lines += ["", *pgbench_ceiling.markdown(ceiling, top["rps"] if top else None)]
    return lines


def _context(results: dict[str, Any]) -> str:
    analyzed = results.get("analyze_s")
    text = (
        "The service databases were **not** analyzed before these runs (`--skip-analyze`): "
        "plans cached while the tables were empty stay in use."
        if analyzed is None
        else f"The service databases were analyzed before these runs ({analyzed} s)."
    )
    source = results.get("source") or {}
    if source.get("commit"):
        text += f" Code: commit {source['commit']}"
        changed = source.get("uncommitted_service_changes")
        text += f", {changed} uncommitted file(s) under services/ and libs/." if changed else "."
    return text


def _probe_text(write: dict[str, Any], checks: dict[str, Any] | None) -> str:
    text = (
        f"HTTP {write['status']}, states as asked: {write['states_as_asked']}, signed receipt "
        f"(compact JWS): {write['receipt_is_jws']}, subject version {write['subject_version']}"
        f", {write['response_bytes']} bytes."
    )
    if checks:
        wrong = checks["wrong"]
        text += (
            f" Check probe: {checks['checked']} answers (single and batch) for subjects of known "
            f"state, {len(wrong)} wrong" + (f": {wrong[:3]}" if wrong else "") + "."
        )
    return text


def _scenario_runs(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    runs = [(f"write, 4 purposes, c{r['concurrency']}", r) for r in results.get("writes", [])]
    if results.get("unloaded"):
        runs.append(("write, 4 purposes, unloaded (c1)", results["unloaded"]))
    if results.get("check"):
        runs.append((f"single check, c{results['check']['concurrency']}", results["check"]))
    if results.get("batch"):
        batch = results["batch"]
        runs.append((f"batch check x{batch['batch_size']:,}, c{batch['concurrency']}", batch))
    return runs


def _runs_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | s | req/s | pairs/s | p50 ms | p99 ms | max ms | errors "
        "| generator CPU % (µs/req) | API RSS max / end MiB | audit caught up after |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, run in _scenario_runs(results):
        lat = run["latency_ms"]
        drain = run.get("audit_drain_s", "n/a")
        caught = (
            "n/a" if drain == "n/a" else "not within 120 s" if drain is None else f"{drain:.1f} s"
        )
        rss = run["api_rss_mib"]
        lines.append(
            f"| {label} | {run['window_s']:.0f} | {run['rps']:,.0f} "
            f"| {_fmt(run.get('pairs_per_s'), 0)} | {_fmt(lat['p50'])} | {_fmt(lat['p99'])} "
            f"| {_fmt(lat['max'])} | {run['errors']} | {run['generator_cpu_percent']:.0f} "
            f"({_fmt(run['generator_us_per_request'], 0)}) | {_fmt(rss['max'])} / "
            f"{_fmt(rss['end'])} | {caught} |"
        )
    before = results.get("api_rss_mib_before")
    after = results.get("api_memory_after_mib")
    if results.get("api_processes", 1) > 1:
        totals = [run["api_rss_mib"]["total_max"] for _, run in _scenario_runs(results)]
        lines += [
            "",
            f"The API ran as {results['api_processes']} processes (`CONSENTRY_HTTP_WORKERS`): "
            "RSS figures are of the largest one; all of them together reached "
            f"{max(totals):.1f} MiB.",
        ]
    if before is not None:
        note = f"API RSS before these runs {before} MiB"
        if after:
            note += f"; after them RSS {after['rss']} MiB, USS (memory only it uses) {after['uss']}"
        lines += ["", note + " MiB."]
    return lines


def _cpu_table(results: dict[str, Any]) -> list[str]:
    runs = _scenario_runs(results)
    seen = {role for _, run in runs for role in run["cpu_percent_of_one_core"]}
    seen -= {"total", cpu.OTHER}
    roles = [r for r in _CPU_ORDER if r in seen] + sorted(seen - set(_CPU_ORDER))
    lines = [
        "CPU over each measured window, per process group in % of one core (the machine has "
        f"{100 * len(os.sched_getaffinity(0))} %), and per request in ms:",
        "",
        "| scenario | " + " | ".join(roles) + " | total (ours) | other processes | machine busy "
        "| CPU ms per request (ours) |",
        "|---|" + "---:|" * (len(roles) + 4),
    ]
    for label, run in runs:
        usage = run["cpu_percent_of_one_core"]
        per = run["cpu_ms_per_request"].get("total")
        lines.append(
            f"| {label} | "
            + " | ".join(f"{usage.get(role, 0.0):.0f}" for role in roles)
            + f" | {usage['total']:.0f} | {usage.get(cpu.OTHER, 0.0):.0f} "
            f"| {run['machine_cpu_percent']['busy']:.0f} % | {_fmt(per, 2)} |"
        )
    noisy = [label for label, run in runs if run["cpu_percent_of_one_core"].get(cpu.OTHER, 0) > 10]
    if noisy:
        lines += [
            "",
            "**Warning: processes the benchmark did not start used more than 10 % of a core "
            f"during: {', '.join(noisy)}. Those figures are lower than on a quiet machine.**",
        ]
    return lines


def _generator_note(results: dict[str, Any]) -> list[str]:
    check = results.get("check")
    if not check or not check["generator_us_per_request"]:
        return []
    per = check["generator_us_per_request"]
    return [
        f"Load generator (one Python process, uvloop, raw HTTP/1.1): {per:.0f} µs of CPU per "
        f"single check, {check['generator_cpu_percent']:.0f} % of one core at "
        f"{check['rps']:,.0f} req/s; alone on one core it could send about "
        f"{1e6 / per:,.0f} req/s. It shares the 2 cores with the stack, so every µs it uses "
        "is taken from the services.",
    ]
