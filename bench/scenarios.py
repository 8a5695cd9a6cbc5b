"""The measured scenarios: write throughput (closed loop) and consent-to-audit propagation."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench import cpu
from bench.audit import AuditFollower, BenchError, is_first_given, subject_refs
from bench.stats import summary

ROOT = Path(__file__).resolve().parent.parent  # where `python -m bench.load` is importable
DRAIN_TIMEOUT_S = 120.0
_OUTBOX_TIMES = """
SELECT event_id, created_at, published_at FROM eventing_outbox
WHERE event_id = ANY($1::uuid[]) AND published_at IS NOT NULL
"""


@dataclass(frozen=True)
class Endpoint:
    """Host and port of one HTTP API."""

    host: str
    port: int


async def run_generator(
    argv: list[str], on_event: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run `python -m bench.load ARGV` as a separate process; return its `result` event."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.load",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
        limit=1 << 26,
    )
    assert proc.stdout is not None
    try:
        result: dict[str, Any] | None = None
        while line := await proc.stdout.readline():
            event: dict[str, Any] = json.loads(line)
            if event["event"] == "result":
                result = event
            elif on_event is not None:
                on_event(event)
        code = await proc.wait()
        if code != 0 or result is None:
            raise BenchError(f"the load generator failed (exit code {code})")
        return result
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def throughput(
    consent: Endpoint, follower: AuditFollower, expected_head: int, concurrency: int, **opts: Any
) -> dict[str, Any]:
    """Closed-loop consent writes at `concurrency`; then wait for the audit chain to catch up."""
    samples: dict[str, tuple[float, cpu.Snapshot]] = {}

    def on_event(event: dict[str, Any]) -> None:
        samples[event["event"]] = (time.perf_counter(), cpu.snapshot())

    argv = ["closed", "--host", consent.host, "--port", str(consent.port)]
    argv += ["--prefix", f"{opts['prefix']}-c{concurrency}", "--concurrency", str(concurrency)]
    argv += ["--duration", str(opts["duration"]), "--warmup", str(opts["warmup"])]
    result = await run_generator(argv, on_event)
    (t0, before), (t1, after) = samples["measure_start"], samples["measure_end"]
    result.pop("event")
    result["cpu_percent_of_one_core"] = cpu.usage(before, after, t1 - t0)
    result["machine_cpu_percent"] = cpu.machine(before, after)
    result["cpu_ms_per_write"] = {
        role: round(10 * share / result["rps"], 3) if result["rps"] else None
        for role, share in result["cpu_percent_of_one_core"].items()
        if role != cpu.OTHER
    }
    result["generator_cpu_percent"] = round(100 * result["generator_cpu_s"] / (t1 - t0), 1)
    # Every 200 is one event; the next scenario must not start with a backlog.
    expected_head += result["ok_total"]
    result["audit_drain_s"] = await follower.until_head(expected_head, DRAIN_TIMEOUT_S)
    result["audit_backlog_at_end"] = max(0, expected_head - follower.after)
    return result


async def propagation(
    consent: Endpoint, follower: AuditFollower, *, rate: float, duration: float, **opts: Any
) -> dict[str, Any]:
    """Paced writes, each to a new subject, followed through the audit API to their entries."""
    argv = ["paced", "--host", consent.host, "--port", str(consent.port)]
    argv += ["--prefix", f"{opts['prefix']}-p", "--rate", str(rate), "--duration", str(duration)]
    follower.keep, follower.seen = True, {}
    stop = asyncio.Event()
    poller = asyncio.create_task(_follow(follower, stop))
    try:
        result = await run_generator(argv)
        requests = result["requests"]
        ok = [r for r in requests if r[1] == "200"]
        refs = await subject_refs(consent.host, consent.port, [r[0] for r in ok])
        deadline = time.monotonic() + opts["timeout"]
        while time.monotonic() < deadline and not poller.done():
            if all(ref in follower.seen for ref in refs.values()):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await poller  # re-raises what made the follower fail
    follower.keep = False
    event_ids = [seen[0].event_id for seen in follower.seen.values()]
    outbox = await _outbox_times(opts["consent_dsn"], event_ids)
    figures = _propagation_figures(result, ok, refs, follower, outbox)
    return {"rate": rate, "duration_s": duration, **figures}


async def _follow(follower: AuditFollower, stop: asyncio.Event) -> None:
    """Poll the audit API every ~20 ms until `stop` is set."""
    while not stop.is_set():
        await follower.poll()
        await asyncio.sleep(0.02)


async def _outbox_times(dsn: str, event_ids: list[str]) -> dict[str, tuple[float, float]]:
    """event id -> (outbox created_at, published_at) as epoch seconds, from the consent DB."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(_OUTBOX_TIMES, event_ids)
    finally:
        await conn.close()
    return {
        str(row["event_id"]): (row["created_at"].timestamp(), row["published_at"].timestamp())
        for row in rows
    }


def _propagation_figures(
    result: dict[str, Any],
    ok: list[list[Any]],
    refs: dict[str, str],
    follower: AuditFollower,
    outbox: dict[str, tuple[float, float]],
) -> dict[str, Any]:
    put, from_start, from_response, observed = [], [], [], []
    relay, downstream = [], []
    found = duplicates = wrong = 0
    for subject, _, started, ended in ok:
        entries = follower.seen.get(refs[subject], [])
        if not entries:
            continue
        found += 1
        duplicates += len(entries) - 1
        wrong += not is_first_given(entries[0])
        put.append((ended - started) * 1000)
        from_start.append((entries[0].appended_at - started) * 1000)
        from_response.append((entries[0].appended_at - ended) * 1000)
        observed.append((entries[0].seen_at - started) * 1000)
        if (times := outbox.get(entries[0].event_id)) is not None:
            relay.append((times[1] - ended) * 1000)
            downstream.append((entries[0].appended_at - times[1]) * 1000)
    return {
        "sent": len(result["requests"]),
        "ok": len(ok),
        "errors": len(result["requests"]) - len(ok),
        "found": found,
        "lost": len(ok) - found,
        "duplicates": duplicates,
        "unexpected_entries": wrong,
        "achieved_rate": round(len(result["requests"]) / result["elapsed_s"], 1),
        "max_late_ms": result["max_late_ms"],
        "generator_cpu_percent": round(100 * result["generator_cpu_s"] / result["elapsed_s"], 1),
        "put_ms": summary(put),
        "appended_minus_request_start_ms": summary(from_start),
        "appended_minus_response_ms": summary(from_response),
        "seen_by_follower_minus_request_start_ms": summary(observed),
        "outbox_published_minus_response_ms": summary(relay),
        "appended_minus_outbox_published_ms": summary(downstream),
    }
