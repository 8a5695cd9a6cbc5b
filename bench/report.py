"""Machine facts, and the results as JSON and as a markdown summary."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
from pathlib import Path
from typing import Any

import asyncpg
import psutil

from bench import consent_api

BUSY_WARNING = 10.0  # % of all cores busy before the start that makes the run suspect
_PG_SETTINGS = ("server_version", "fsync", "synchronous_commit", "full_page_writes")
_CPU_ORDER = (
    "load generator",
    "consent api",
    "postgres",
    "consent relay",
    "audit appender",
    "audit relay",
    "audit api",
    "broker",
    "bench orchestrator",
    "other processes",
)


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


async def machine_info(server_dsn: str) -> dict[str, Any]:
    """Cores, memory, Python, PostgreSQL version and durability settings, HTTP stack."""
    conn = await asyncpg.connect(server_dsn, timeout=10)
    try:
        pg = {name: await conn.fetchval(f"SHOW {name}") for name in _PG_SETTINGS}
    finally:
        await conn.close()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "postgresql": pg,
        "uvicorn": importlib.metadata.version("uvicorn"),
        "http_parser": "httptools" if importlib.util.find_spec("httptools") else "h11",
        "event_loop": "uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
    }


def write(results: dict[str, Any], directory: Path, markdown: str) -> list[Path]:
    """Write `<stamp>.json`, `latest.json` and `latest.md` (via temporary files)."""
    directory.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    written = []
    for name, content in ((f"{results['stamp']}.json", text), ("latest.json", text)):
        written.append(_replace(directory / name, content))
    written.append(_replace(directory / "latest.md", markdown))
    return written


def _replace(path: Path, content: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(content)
    tmp.replace(path)
    return path


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def markdown(results: dict[str, Any]) -> str:
    """The results as a short markdown document."""
    m, p = results["machine"], results["parameters"]
    pg = m["postgresql"]
    lines = [
        f"# consentry bench, {results['stamp']}",
        "",
        f"{m['usable_cpus']} CPU cores ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}. PostgreSQL {pg['server_version']}, {results['postgres']}: "
        f"fsync={pg['fsync']}, synchronous_commit={pg['synchronous_commit']}, "
        f"full_page_writes={pg['full_page_writes']}; "
        f"broker: {results['broker']}. uvicorn {m['uvicorn']} with {m['http_parser']} and "
        f"the {m['event_loop']} event loop. **Services, PostgreSQL, broker and the load "
        f"generator all share these {m['usable_cpus']} cores.**",
    ]
    idle = results["machine_before_start"]
    if idle["busy"] > BUSY_WARNING:
        lines += [
            "",
            f"**Warning: the machine was already {idle['busy']:.0f} % busy (of all cores) "
            "before the benchmark started; other processes competed for the CPU (see the "
            "`other processes` column). Figures are lower than on a quiet machine.**",
        ]
    if results.get("consent_api"):
        lines += ["", *consent_api.markdown(results["consent_api"])]
    if results["throughput"]:
        lines += ["", f"## Consent writes: closed loop, {p['duration']} s after {p['warmup']} s"]
        lines += ["", "| scenario | concurrency | req/s | p50 ms | p99 ms | max ms | errors |"]
        lines.append("|---|---:|---:|---:|---:|---:|---:|")
        for run in results["throughput"]:
            lat = run["latency_ms"]
            lines.append(
                f"| PUT consent | {run['concurrency']} | {run['rps']:.0f} | {_ms(lat['p50'])} "
                f"| {_ms(lat['p99'])} | {_ms(lat['max'])} | {run['errors']} |"
            )
        lines += ["", *_cpu_table(results["throughput"])]
    if results.get("propagation"):
        lines += ["", *_propagation(results["propagation"])]
    return "\n".join(lines) + "\n"


def _cpu_table(runs: list[dict[str, Any]]) -> list[str]:
    seen = {role for run in runs for role in run["cpu_percent_of_one_core"]} - {"total"}
    roles = [r for r in _CPU_ORDER if r in seen] + sorted(seen - set(_CPU_ORDER))
    lines = [
        "CPU over the measured window, per process group in % of one core (the machine has "
        f"{100 * len(os.sched_getaffinity(0))} %); machine busy/steal in % of all cores "
        "(system-wide, includes the kernel); and how long the relay and appender took to "
        "bring the audit chain up to date after the window:",
        "",
        "| concurrency | "
        + " | ".join(roles)
        + " | total (ours) | machine busy | steal | audit caught up after |",
        "|---:|" + "---:|" * (len(roles) + 4),
    ]
    for run in runs:
        usage = run["cpu_percent_of_one_core"]
        cells = [f"{usage.get(role, 0.0):.0f}" for role in roles]
        drain = run["audit_drain_s"]
        caught = "not within 120 s" if drain is None else f"{drain:.1f} s"
        whole = run["machine_cpu_percent"]
        lines.append(
            f"| {run['concurrency']} | "
            + " | ".join(cells)
            + f" | {usage['total']:.0f} | {whole['busy']:.0f} % | {whole.get('steal', 0):.0f} %"
            + f" | {caught} |"
        )
    for run in runs:
        per_write = run["cpu_ms_per_write"]
        parts = [f"{role} {per_write[role]:.2f}" for role in roles if per_write.get(role)]
        lines += [
            "",
            f"CPU per successful write at concurrency {run['concurrency']}, ms: "
            + ", ".join(parts)
            + f"; **total {per_write['total']:.2f} ms**",
        ]
    noisy = [
        str(run["concurrency"])
        for run in runs
        if run["cpu_percent_of_one_core"].get("other processes", 0.0) > BUSY_WARNING
    ]
    if noisy:
        lines += [
            "",
            f"**Warning: processes the benchmark did not start used more than {BUSY_WARNING:g} %"
            f" of a core during the run(s) at concurrency {', '.join(noisy)}: those figures "
            "are lower than on a quiet machine.**",
        ]
    return lines


def _propagation(prop: dict[str, Any]) -> list[str]:
    lines = [
        f"## Consent → audit propagation: {prop['rate']:g} writes/s for {prop['duration_s']:g} s,"
        " one new subject each",
        "",
        f"sent {prop['sent']}, 200 {prop['ok']}, errors {prop['errors']}, found in the audit "
        f"chain {prop['found']}, **lost {prop['lost']}**, duplicates {prop['duplicates']}, "
        f"unexpected entries {prop['unexpected_entries']}; achieved {prop['achieved_rate']:g}"
        f" writes/s, generator CPU {prop['generator_cpu_percent']:g} % of one core.",
        "",
        "| measure | n | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    rows = (
        ("PUT latency (request start → response)", "put_ms"),
        ("appended_at - request start", "appended_minus_request_start_ms"),
        ("appended_at - response received", "appended_minus_response_ms"),
        (
            "seen by the audit API follower (20 ms polls) - request start",
            "seen_by_follower_minus_request_start_ms",
        ),
        (
            "stage: outbox published_at (after the Kafka ack) - response",
            "outbox_published_minus_response_ms",
        ),
        ("stage: appended_at - outbox published_at", "appended_minus_outbox_published_ms"),
    )
    for label, key in rows:
        s = prop[key]
        lines.append(
            f"| {label} | {s['n']} | {_ms(s['p50'])} | {_ms(s['p99'])} | {_ms(s['max'])} |"
        )
    return lines
