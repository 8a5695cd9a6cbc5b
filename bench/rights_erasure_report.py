"""The results of `bench.rights_erasure` as markdown."""

from __future__ import annotations

from typing import Any

from bench.report import BUSY_WARNING

TARGET_P99_MS = 2000.0  # issue 6: accepted → every recipient has a verified webhook, at 100/s
TARGET_BULK_S = 300.0  # issue 6: a bulk erasure of 100,000 subjects completes in 5 minutes


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f}"


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "**not met**")


def _cpu(usage: dict[str, float]) -> str:
    parts = [f"{role} {value:.0f}" for role, value in usage.items() if role != "total"]
    postgres = sum(v for role, v in usage.items() if role.split(":")[0] == "postgres")
    return (
        ", ".join(parts) + f"; PostgreSQL in all {postgres:.0f}; ours in total {usage['total']:.0f}"
    )


def _sessions(summary: dict[str, Any], top: int = 8) -> str:
    kinds = [
        f"{row['database'].removeprefix('consentry_')} {row['what']} {row['average']:.2f}"
        for row in summary["sessions"][:top]
    ]
    processes = [
        f"{row['process']} {row['what']} {row['average']:.2f}"
        for row in summary.get("processes", [])[:top]
    ]
    return (
        f"PostgreSQL sessions not idle, on average ({summary['samples']} samples of "
        "`pg_stat_activity`): "
        + (", ".join(kinds) or "none")
        + ". By the process they serve: "
        + (", ".join(processes) or "none")
        + "."
    )


def _tables(rows: list[dict[str, Any]], top: int = 5) -> str:
    shown = [
        f"{row['database']}.{row['table']} {row['seq_tup_read']:,} rows in {row['seq_scan']:,} "
        f"scans (index scans {row['idx_scan']:,})"
        for row in rows[:top]
        if row["seq_tup_read"]
    ]
    return "Sequential scans (`pg_stat_user_tables`), most rows read: " + (
        "; ".join(shown) + "." if shown else "none."
    )


def _commits(databases: dict[str, Any], unit: str) -> str:
    parts = [
        f"{name.removeprefix('consentry_')} {d['commits_per_unit']:.1f}"
        for name, d in sorted(databases.items(), key=lambda item: -item[1]["xact_commit"])
    ]
    return f"Transactions committed per {unit} (`pg_stat_database`): " + ", ".join(parts) + "."


def markdown(results: dict[str, Any], level: int = 1) -> str:
    """The results as markdown; `level` is the heading level of its title."""
    m, p = results["machine"], results["parameters"]
    pg, title = m["postgresql"], "#" * level
    seeding, rate, bulk = results["seeding"], results["rate"], results["bulk"]
    lines = [
        f"{title} Erasure end to end on the full stack, {results['when']}",
        "",
        f"{m['usable_cpus']} CPU cores ({m['cpu_model']}), {m['memory_gib']} GiB, Python "
        f"{m['python']}, PostgreSQL {pg['server_version']} (fsync={pg['fsync']}, "
        f"synchronous_commit={pg['synchronous_commit']}), Tansu (memory). **Everything shares "
        f"these cores**: the {len(results['processes'])} service processes of `make run` "
        f"({', '.join(results['processes'])}), PostgreSQL, the broker and this process (the "
        "load, the recipients' webhook endpoints, the supervisor copying service logs).",
    ]
    before = results["machine_before_start"]["busy"]
    lines += [
        "",
        f"Machine busy before the start: {before:.0f} % of all cores"
        + (
            " — **other work was running (e.g. other engineers' tests); figures are lower "
            "than on a quiet machine**."
            if before > BUSY_WARNING
            else "."
        ),
        "",
        f"Tenant: {results['tenant']}. Seeding (not measured): {seeding['subjects']:,} "
        f"subjects, each with a `marketing-email` consent (consent API, "
        f"{seeding['consents_per_s']:,.0f}/s) and an e-mail address (preferences API, "
        f"{seeding['contacts_per_s']:,.0f}/s); both services held "
        f"them after {seeding['held_s']:,.0f} s, the stack was idle after "
        f"{seeding['settled_s']:,.0f} s.",
        "",
        "The idle stack (before any request) uses, in % of one core: "
        f"{_cpu(results['idle_cpu_percent_of_one_core'])}.",
        "",
        *_targets(rate, bulk),
        *(["", *_rate(rate, p)] if rate else []),
        *(["", *_bulk(bulk)] if bulk else []),
    ]
    return "\n".join(lines) + "\n"


def _targets(rate: dict[str, Any] | None, bulk: dict[str, Any] | None) -> list[str]:
    lines = ["| issue 6 target | measured | |", "|---|---|---|"]
    if rate:
        p99 = rate["all_recipients_from_answer_ms"]["p99"]
        sent_p99 = rate["all_recipients_from_send_ms"]["p99"]
        ok = None if p99 is None else (p99 <= TARGET_P99_MS and rate["requests_lost"] == 0)
        lines.append(
            "| erasure accepted → every recipient has a verified webhook: p99 ≤ 2 s at "
            f"100/s | p99 {_ms(p99)} ms from the 202 ({_ms(sent_p99)} ms from the send) at "
            f"{rate['achieved_rate']}/s, {rate['requests_lost']} lost | {_verdict(ok)} |"
        )
    if bulk:
        done, full = bulk["completed_s"], bulk["subjects"] >= 100_000
        ok = None if done is None else done <= TARGET_BULK_S and full
        lines.append(
            "| bulk erasure of 100,000 subjects completes across all services ≤ 5 min "
            f"| {bulk['subjects']:,} subjects: {_s(done)} s accepted → completed "
            f"| {_verdict(ok)}"
            + ("" if full else " (fewer subjects: not the target's size)")
            + " |"
        )
    return lines


def _rate(rate: dict[str, Any], p: dict[str, Any]) -> list[str]:
    lines = [
        f"## (a) Erasure requests at {p['rate']:g}/s for {p['duration']:g} s, "
        f"{p['recipients']} recipients",
        "",
        f"Open loop (each `POST /v1/rights-requests`, one subject, leaves at its scheduled "
        f"time over {p['connections']} keep-alive connections) after {p['warmup']} warm-up "
        f"requests. {rate['requests']:,} sent, answers {rate['statuses']}, achieved "
        f"{rate['achieved_rate']}/s, latest send {rate['max_late_ms']:.0f} ms behind "
        "schedule.",
        "",
        "| measure | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    rows = [
        ("API answer (202)", rate["api_ms"]),
        ("**202 → last recipient has a verified webhook**", rate["all_recipients_from_answer_ms"]),
        ("send → last recipient has a verified webhook", rate["all_recipients_from_send_ms"]),
        ("202 → request `completed` (closed_at)", rate["completed_from_answer_ms"]),
    ]
    stages = rate["stages_ms"]
    rows += [
        ("stage: 202 → fanned out (rights worker)", stages["answer_to_fanned_out"]),
        ("stage: fanned out → published (consent relay)", stages["fanned_out_to_published"]),
        (
            "stage: published → notifier's transaction began (broker, fetch, batches ahead)",
            stages["published_to_delivery_written"],
        ),
        (
            "stage: → first attempt (the sender's claim; 0 when the notifier's own sender"
            " took it over in that transaction)",
            stages["written_to_first_attempt"],
        ),
        (
            "stage: → received (rest of that transaction, commit, sender slot, HTTP)",
            stages["first_attempt_to_received"],
        ),
    ]
    for label, s in rows:
        lines.append(
            f"| {label} | {s['n']:,} | {_ms(s['p50'])} | {_ms(s['p90'])} | {_ms(s['p99'])} "
            f"| {_ms(s['max'])} |"
        )
    lines += [
        "",
        f"Webhooks expected {rate['webhooks_expected']:,}, received "
        f"{rate['webhooks_received']:,}, verified {rate['webhooks_verified']:,}; requests "
        f"lost {rate['requests_lost']}; repeated webhooks {rate['repeated_webhooks']}; "
        f"completed {rate['completed']:,} of {rate['accepted']:,}.",
        "",
        f"CPU from the first request until every webhook arrived ({rate['cpu_window_s']} s), "
        f"% of one core: {_cpu(rate['cpu_percent_of_one_core'])}. Machine busy "
        f"{rate['machine_cpu_percent']['busy']:.0f} % of all cores; work this bench did not "
        f"start took {rate['cpu_others_percent_of_one_core']:.0f} % of one core.",
        "",
        _sessions(rate["postgres_sessions"]),
        "",
        _tables(rate["tables"]),
        "",
        _commits(rate["databases"], "request"),
    ]
    return lines


def _bulk(bulk: dict[str, Any]) -> list[str]:
    ms, counts = bulk["milestones_s"], bulk["counts"]
    consent, prefs, subs = ms["consent"], ms["preferences"], ms["subprocessors"]
    lines = [
        f"## (b) Bulk erasure of {bulk['subjects']:,} subjects, 1 recipient",
        "",
        f"One `POST` ({bulk['body_bytes'] / 1e6:.1f} MB) accepted in {bulk['accept_s']:.1f} s; "
        f"state `{bulk['state']}` **{_s(bulk['completed_s'])} s** after the 202. Milestones, "
        "in seconds after the 202, from each service's own database:",
        "",
        "| service | milestone | s | count |",
        "|---|---|---:|---:|",
        f"| consent | fan-out: first / last `ErasureRequested` queued (own data erased in the "
        f"same transactions) | {_s(consent['fan_out_first'])} / {_s(consent['fan_out_last'])} "
        f"| {counts['consent']['erasure_requested_events']:,} |",
        f"| consent | relay: last published | {_s(consent['relay_last'])} | |",
        f"| preferences | erasures: first / last `ErasureCompleted` queued "
        f"| {_s(prefs['erased_first'])} / {_s(prefs['erased_last'])} "
        f"| {counts['preferences']['erasure_completed_events']:,} |",
        f"| preferences | relay: last published | {_s(prefs['relay_last'])} | |",
        f"| subprocessors | notifier: last notice (delivery) written | {_s(subs['notices_last'])} "
        f"| {counts['subprocessors']['deliveries']:,} |",
        f"| subprocessors | sender: last first attempt | {_s(subs['first_attempts_last'])} "
        f"| {counts['subprocessors']['retried']:,} retried |",
        f"| recipient | last verified webhook received | {_s(subs['received_last'])} "
        f"| {counts['subprocessors']['webhooks_verified']:,} |",
        f"| subprocessors | last acknowledgement recorded | {_s(subs['acknowledged_last'])} "
        f"| {counts['subprocessors']['acknowledged']:,} |",
        f"| consent | tracker: request `completed`, certificate signed "
        f"| **{_s(consent['closed_at'])}** | |",
        f"| audit | appender caught up (entries appended since the request) "
        f"| {_s(bulk['audit']['caught_up_s'])} | {bulk['audit']['entries']:,} |",
        "",
        "Progress as `GET /v1/rights-requests/{id}` showed it (every ~30 s):",
        "",
    ]
    series = bulk["series"]
    if series:
        columns = list(series[-1])
        lines += ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
        shown = [row for n, row in enumerate(series) if n % 30 == 29] + [series[-1]]
        for row in shown:
            lines.append("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |")
    lines += [
        "",
        f"CPU from the send to `completed` ({bulk['cpu_window_s']} s), % of one core: "
        f"{_cpu(bulk['cpu_percent_of_one_core'])}. Machine busy "
        f"{bulk['machine_cpu_percent']['busy']:.0f} % of all cores; work this bench did not "
        f"start took {bulk['cpu_others_percent_of_one_core']:.0f} % of one core. Per "
        "subject, CPU ms: "
        + ", ".join(
            f"{role} {share * bulk['cpu_window_s'] * 10 / bulk['subjects']:.2f}"
            for role, share in bulk["cpu_percent_of_one_core"].items()
            if share >= 1.0 and role != "other processes"
        )
        + ".",
        "",
        _sessions(bulk["postgres_sessions"]),
        "",
        _tables(bulk["tables"]),
        "",
        _commits(bulk["databases"], "subject"),
    ]
    return lines
