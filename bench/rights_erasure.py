"""Erasure requests end to end on the full stack (issue 6's performance targets).

    uv run python -m bench.rights_erasure [--quick] [--rate 100] [--duration 30]
                                          [--recipients 3] [--bulk-subjects 100000]

Starts the whole stack as `make run` does (`DevStack`: embedded PostgreSQL, the Tansu broker,
every process of every service in `consentry.devstack.services.SERVICES`: consent api, relay,
intake, policy-scheduler, rights, rights-tracker; audit appender, relay, api; preferences
api, relay, directory, consent-follower, list-processor, rights; subprocessors api, relay,
directory, notifier, sender), then:

1. **A tenant as a user makes one**: `python -m consentry.consent create-tenant` with the
   consent database owner's DSN, then a scoped key from its admin key (`POST /v1/api-keys`),
   which the other services learn from the tenant directory. A subprocessors API that does
   not know tenants from the directory yet refuses that key; the bench then falls back to
   the development tenant and key, which `make run` gives every user (the report says which).
2. **Subjects in consent and preferences** (not measured): a `marketing-email` consent per
   subject through the consent API (`PUT /v1/subjects/{id}/consents/marketing-email`, group
   committed; the intake topic's worker applies one event at a time, several times slower
   here) and an e-mail address per subject through the preferences API (`PUT
   /v1/subjects/{id}/contact`: a subject row and its data key), both closed loop over
   `--seed-concurrency` connections; the preferences service's consent follower copies the
   consents. Then the bench waits until every outbox is published and the services are idle.
3. **Recipients** registered through the subprocessors API (`POST /v1/recipients`, loopback
   webhook URLs); their endpoints are served by this process (`bench.webhook_receivers`:
   every request verified with `standardwebhooks`, answered with a signed acknowledgement).
4. **(a) Erasure at a rate**: after `--warmup` requests, `--rate` requests/s open loop for
   `--duration` s, each `POST /v1/rights-requests` erasing one seeded subject for the tenant.
   Per request: scheduled send time and the API's 202 → the moment the LAST recipient got
   its verified webhook (p50/p90/p99/max), losses (accepted without every verified webhook
   after `--timeout` s), repeated webhooks, errors, accepted → `completed` (the request's
   `closed_at`), where the time goes (consent fan-out and relay from the consent outbox,
   notifier and sender from the deliveries) and CPU per process group.
5. **(b) Bulk erasure**: all recipients but one are deactivated; one `POST` naming
   `--bulk-subjects` seeded subjects; the bench polls `GET /v1/rights-requests/{id}` every
   second until it is `completed`, and reports accepted → completed (target 5 minutes) with
   the milestones of every service from its own database: consent fan-out, preferences
   erasures, the notifier's deliveries sent and acknowledged, the tracker's bookkeeping,
   the audit log catching up.

Results: `results/rights_erasure.{json,md}`. `make bench` runs it last (`--skip-rights-erasure`
leaves it out, `--rights-erasure-quick` runs the short form).
"""

from __future__ import annotations

import argparse
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
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench import cpu, report
from bench.audit import BenchError
from bench.consent_api import POLICY
from bench.pg_waits import (
    WaitSampler,
    backend_labels,
    database_deltas,
    database_stats,
    table_deltas,
    table_stats,
)
from bench.rawhttp import HttpConnection, ProtocolError, RequestBuilder
from bench.rights_erasure_report import markdown
from bench.scenarios import Endpoint
from bench.stats import summary
from bench.webhook_receivers import Receivers, serve
from consentry.devstack.postgres import drop_database
from consentry.devstack.services import DEV_API_KEY, DEV_TENANT_ID, SERVICES, child_env
from consentry.devstack.spawning import free_port
from consentry.devstack.stack import STARTUP_FAILURES, DevStack, DevStackSettings
from consentry.eventing import catalogue
from consentry.eventing.db import set_tenant

RESULTS = Path(__file__).parent / "results"
_FAILURES: tuple[type[BaseException], ...] = (BenchError, ProtocolError, *STARTUP_FAILURES)
SCOPES = (
    "consent:read",
    "consent:write",
    "policy:admin",
    "rights:read",
    "rights:write",
    "preferences:read",
    "preferences:write",
    "subprocessors:read",
    "subprocessors:admin",
)
SEED_PURPOSE = "marketing-email"
SETTLE_TIMEOUT_S = 900.0
POLL_S = 1.0  # status polls of the bulk request
STATS_FLUSH_S = 1.5  # sessions report table counters up to a second after a transaction


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run (see `python -m bench.rights_erasure --help`)."""

    rate: float = 100.0
    duration: float = 30.0
    warmup: int = 50
    recipients: int = 3
    connections: int = 32
    timeout: float = 60.0
    bulk_subjects: int = 100_000
    bulk_timeout: float = 3600.0
    seed_concurrency: int = 32
    quick: bool = False
    skip_rate: bool = False  # leave out (a)
    skip_bulk: bool = False  # leave out (b)
    results_dir: Path = RESULTS
    keep_logs: bool = False


QUICK: dict[str, Any] = {"duration": 5.0, "warmup": 20, "bulk_subjects": 5_000}


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"bench.rights_erasure: {message}", file=sys.stderr, flush=True)


@dataclasses.dataclass(frozen=True)
class Tenant:
    """The tenant the bench works for, its keys, and how it came to be."""

    id: str
    key: str  # consent and preferences APIs
    subprocessors_key: str
    how: str


@dataclasses.dataclass(frozen=True)
class Sent:
    """One erasure request of the rate run."""

    subject: str
    scheduled: float  # time.time() it was due to leave (open loop)
    started: float
    answered: float
    status: str
    request_id: str


def _endpoint(url: str) -> Endpoint:
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    return Endpoint(parts.hostname, parts.port)


def _client(stack: DevStack, service: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=stack.api_url(service), headers={"Authorization": f"Bearer {key}"}, timeout=120
    )


async def _until(done: Callable[[], bool], seconds: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(every)
    return True


async def _accepts(stack: DevStack, service: str, key: str, path: str, seconds: float) -> bool:
    """Whether `service` answers 200 to `path` with `key` within `seconds`."""
    deadline = time.monotonic() + seconds
    async with _client(stack, service, key) as client:
        while True:
            if (await client.get(path)).status_code == 200:
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)


async def provision(stack: DevStack, run_id: str) -> Tenant:
    """A new tenant (CLI) and a scoped key (consent API), or the development tenant when the
    subprocessors API does not accept directory keys."""
    env = {
        **os.environ,
        **child_env(
            database_dsn=stack.database_dsn("consent"),  # the owner, as for `migrate`
            bootstrap=stack.bootstrap,
            http_host="",
            http_port=None,
        ),
    }
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "consentry.consent", "create-tenant"),
        *("--name", f"bench tenant {run_id}"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise BenchError(f"create-tenant failed: {err.decode(errors='replace')[-500:]}")
    printed = dict(line.split(": ", 1) for line in out.decode().splitlines() if ": " in line)
    key = await _scoped_key(stack, printed["api_key"])
    if not await _accepts(stack, "preferences", key, "/v1/topics", 60):
        raise BenchError("the preferences API did not learn the new key within 60 s")
    if await _accepts(stack, "subprocessors", key, "/v1/recipients", 20):
        return Tenant(
            printed["tenant_id"],
            key,
            key,
            "a new tenant (`create-tenant`) with a scoped key (`POST /v1/api-keys`), accepted "
            "by every API through the tenant directory",
        )
    progress("the subprocessors API refuses the new tenant's key: using the dev tenant")
    return Tenant(
        DEV_TENANT_ID,
        await _scoped_key(stack, DEV_API_KEY),
        DEV_API_KEY,
        "the development tenant (`make run`'s): the subprocessors API refused the new "
        "tenant's directory key within 20 s (no directory replica there yet), so consent and "
        "preferences use a scoped key made with `POST /v1/api-keys`, subprocessors the "
        "development key",
    )


async def _scoped_key(stack: DevStack, admin_key: str) -> str:
    async with _client(stack, "consent", admin_key) as client:
        answer = await client.post("/v1/api-keys", json={"name": "bench", "scopes": SCOPES})
    if answer.status_code != 201:
        raise BenchError(f"POST /v1/api-keys: HTTP {answer.status_code}: {answer.text[:300]}")
    key: str = answer.json()["key"]
    return key


async def publish_policy(stack: DevStack, tenant: Tenant) -> str:
    """The tenant's first policy version (consent to `marketing-email` needs one)."""
    async with _client(stack, "consent", tenant.key) as client:
        answer = await client.post("/v1/policy-versions", json=POLICY)
    if answer.status_code not in (201, 409):
        raise BenchError(f"policy version: HTTP {answer.status_code}: {answer.text[:300]}")
    return str(POLICY["version"])


# --- seeding -------------------------------------------------------------------------------


async def seed(
    stack: DevStack, tenant: Tenant, subjects: list[str], opts: Options
) -> dict[str, Any]:
    """Give every subject a consent (consent API) and an e-mail address (preferences API);
    wait until both services hold them and the stack is idle again."""
    started = time.perf_counter()
    consent = {
        "status": "given",
        "policy_version": str(POLICY["version"]),
        "method": "banner",
        "source": "bench-seed",
    }
    consents, contacts = await asyncio.gather(
        _closed_loop(
            _endpoint(stack.api_url("consent")),
            tenant.key,
            subjects,
            lambda builder, subject: builder.put_json(
                f"/v1/subjects/{subject}/consents/{SEED_PURPOSE}", consent
            ),
            200,
            opts.seed_concurrency,
        ),
        _closed_loop(
            _endpoint(stack.api_url("preferences")),
            tenant.key,
            subjects,
            lambda builder, subject: builder.put_json(
                f"/v1/subjects/{subject}/contact", {"email": f"{subject}@bench.example"}
            ),
            204,
            opts.seed_concurrency,
        ),
    )
    sent_s = time.perf_counter() - started
    wanted = len(subjects)
    counts = {
        "consent": (
            "consent",
            f"SELECT count(*) FROM consents WHERE tenant_id = $1 AND purpose = '{SEED_PURPOSE}'",
        ),
        "preferences_consent_copy": (
            "preferences",
            "SELECT count(DISTINCT subject_ref) FROM consent_copy WHERE tenant_id = $1",
        ),
        "preferences_data_keys": (
            "preferences",
            "SELECT count(*) FROM subjects WHERE tenant_id = $1 AND data_key_sealed IS NOT NULL",
        ),
    }
    held: dict[str, int] = {}
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while time.monotonic() < deadline:
        held = {
            name: await _count(stack, service, tenant.id, sql)
            for name, (service, sql) in counts.items()
        }
        if all(n >= wanted for n in held.values()):
            break
        await asyncio.sleep(1.0)
    else:
        raise BenchError(f"seeding: the services hold {held} of {wanted} subjects")
    held_s = time.perf_counter() - started
    settled = await settle(stack)
    return {
        "subjects": wanted,
        "consents_per_s": consents,
        "contacts_per_s": contacts,
        "sent_s": round(sent_s, 1),
        "held_s": round(held_s, 1),
        "settled_s": round(held_s + settled, 1),
        "held": held,
    }


async def _count(stack: DevStack, service: str, tenant_id: str, sql: str) -> int:
    conn = await asyncpg.connect(stack.database_dsn(service))
    try:
        async with conn.transaction():
            await set_tenant(conn, uuid.UUID(tenant_id))
            return int(await conn.fetchval(sql, tenant_id))
    finally:
        await conn.close()


async def _closed_loop(
    api: Endpoint,
    key: str,
    subjects: list[str],
    request: Callable[[RequestBuilder, str], bytes],
    expected: int,
    concurrency: int,
) -> float:
    """`request` for every subject over `concurrency` keep-alive connections, each sending
    its next as soon as the last was answered `expected`; the rate achieved."""
    builder = RequestBuilder(api.host, api.port, key)
    queue = iter(subjects)
    started = time.perf_counter()

    async def worker() -> None:
        conn = HttpConnection(api.host, api.port)
        try:
            for subject in queue:
                status, body = await conn.request(request(builder, subject))
                if status != expected:
                    raise BenchError(f"seeding: HTTP {status}: {body[:300]!r}")
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return round(len(subjects) / (time.perf_counter() - started), 1)


_ACTIVITY = """
SELECT (SELECT count(*) FROM eventing_inbox) AS applied,
       (SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL) AS unpublished
"""


async def settle(stack: DevStack, within: float = SETTLE_TIMEOUT_S) -> float:
    """Wait until every outbox is published and no consumer of any service has applied an
    event for 2 s (every consumer claims each event in its inbox); return the seconds."""
    started = time.monotonic()
    previous = -1
    while True:
        applied = unpublished = 0
        for service in SERVICES:
            conn = await asyncpg.connect(stack.database_dsn(service.name))
            try:
                row = await conn.fetchrow(_ACTIVITY)
            finally:
                await conn.close()
            assert row is not None
            applied += int(row["applied"])
            unpublished += int(row["unpublished"])
        elapsed = time.monotonic() - started
        if unpublished == 0 and applied == previous:
            return round(elapsed, 1)
        if elapsed > within:
            progress(f"still busy after {within:g} s ({unpublished} events unpublished); going on")
            return round(elapsed, 1)
        previous = applied
        await asyncio.sleep(2.0)


async def cpu_now(stack: DevStack) -> cpu.Snapshot:
    """`cpu.snapshot()` with PostgreSQL's processes labelled by the process each session
    serves, or by their type (autovacuum, WAL writer, ...)."""
    labels = await backend_labels(stack.server_dsn)
    return cpu.relabel(await asyncio.to_thread(cpu.snapshot), labels)


async def idle_cpu(stack: DevStack, seconds: float = 5.0) -> dict[str, float]:
    """CPU of the idle stack per process group (% of one core): consumers polling the broker."""
    before = await cpu_now(stack)
    await asyncio.sleep(seconds)
    return cpu.usage(before, await cpu_now(stack), seconds)


# --- recipients ----------------------------------------------------------------------------


async def register(stack: DevStack, tenant: Tenant, ports: list[int]) -> list[tuple[str, str]]:
    """One recipient per port through `POST /v1/recipients`: (id, signing secret) each."""
    roles = ("payment", "billing", "affiliate", "joint-marketing")
    made = []
    async with _client(stack, "subprocessors", tenant.subprocessors_key) as client:
        for number, port in enumerate(ports):
            answer = await client.post(
                "/v1/recipients",
                json={
                    "name": f"bench recipient {number}",
                    "role": roles[number % len(roles)],
                    "region": "SE",
                    "webhook_url": f"http://127.0.0.1:{port}/r/{number}",
                    "purposes": [],
                    "data_categories": ["contact details"],
                },
            )
            if answer.status_code != 201:
                raise BenchError(f"POST /v1/recipients: {answer.status_code}: {answer.text[:300]}")
            made.append((answer.json()["id"], answer.json()["signing_secret"]))
    return made


async def deactivate(stack: DevStack, tenant: Tenant, recipient_ids: list[str]) -> None:
    """`DELETE /v1/recipients/{id}`: no new notices for them."""
    async with _client(stack, "subprocessors", tenant.subprocessors_key) as client:
        for recipient_id in recipient_ids:
            answer = await client.delete(f"/v1/recipients/{recipient_id}")
            if answer.status_code != 200:
                raise BenchError(f"DELETE recipient: {answer.status_code}: {answer.text[:300]}")


# --- (a) erasure requests at a rate --------------------------------------------------------

_PATH = "/v1/rights-requests"


async def paced(
    consent: Endpoint, key: str, subjects: Sequence[str], rate: float, connections: int
) -> list[Sent]:
    """One single-subject tenant erasure per subject, open loop at `rate` per second, over a
    pool of keep-alive connections (more are opened when all are busy)."""
    builder = RequestBuilder(consent.host, consent.port, key)
    idle = [HttpConnection(consent.host, consent.port) for _ in range(connections)]
    made: list[Sent] = []

    async def one(subject: str, scheduled: float) -> None:
        conn = idle.pop() if idle else HttpConnection(consent.host, consent.port)
        document = {"kind": "erasure", "requester": "tenant", "subject_id": subject}
        started = time.time()
        try:
            status, body = await conn.request(builder.post_json(_PATH, document))
            request_id = str(json.loads(body)["id"]) if status == 202 else ""
            outcome = str(status)
        except (OSError, ProtocolError) as exc:
            outcome, request_id = type(exc).__name__, ""
        made.append(Sent(subject, scheduled, started, time.time(), outcome, request_id))
        idle.append(conn)

    loop = asyncio.get_running_loop()
    began, wall = loop.time(), time.time()
    tasks = []
    for number, subject in enumerate(subjects):
        delay = began + number / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(subject, wall + number / rate)))
    await asyncio.gather(*tasks)
    for conn in idle:
        await conn.close()
    return made


_FANNED_OUT = """
SELECT s.request_id::text AS request_id, o.created_at, o.published_at
FROM rights_request_subjects s
JOIN eventing_outbox o
  ON o.message_key = convert_to($1 || '/' || s.subject_ref, 'UTF8') AND o.event_type = $2
WHERE s.request_id = ANY($3::uuid[])
"""
_CLOSED = """
SELECT id::text AS request_id, state, closed_at FROM rights_requests
WHERE id = ANY($1::uuid[])
"""
_DELIVERIES = """
SELECT n.request_id, d.recipient_id::text AS recipient_id, d.created_at, d.first_attempt_at,
       d.acknowledged_at, d.status
FROM notices n JOIN deliveries d ON d.tenant_id = n.tenant_id AND d.notice_id = n.id
WHERE n.tenant_id = $1 AND n.request_id = ANY($2::text[])
"""


def _databases(stack: DevStack) -> dict[str, str]:
    return {service.name: stack.database_dsn(service.name) for service in SERVICES}


async def _fetch(stack: DevStack, service: str, tenant_id: str, sql: str, *args: Any) -> list[Any]:
    conn = await asyncpg.connect(stack.database_dsn(service))
    try:
        async with conn.transaction():
            await set_tenant(conn, uuid.UUID(tenant_id))
            return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def erasure_rate(
    stack: DevStack,
    tenant: Tenant,
    receivers: Receivers,
    recipient_ids: list[str],
    subjects: list[str],
    opts: Options,
) -> dict[str, Any]:
    """Warm up, then the measured open-loop run; the figures."""
    consent = _endpoint(stack.api_url("consent"))
    warm, measured = subjects[: opts.warmup], subjects[opts.warmup :]
    progress(f"(a) warming up: {len(warm)} erasure requests")
    done = [s.request_id for s in await paced(consent, tenant.key, warm, 10.0, 4) if s.request_id]
    if len(done) < len(warm) or not await _until(
        lambda: receivers.arrived(set(done)) >= len(done) * receivers.recipients, 120
    ):
        raise BenchError("(a) the warm-up's webhooks did not all arrive within 120 s")
    await settle(stack)
    progress(f"(a) {opts.rate:g} erasure requests/s for {opts.duration:g} s")
    tables = await table_stats(_databases(stack))
    databases = await database_stats(stack.server_dsn)
    sampler = WaitSampler(stack.server_dsn)
    async with sampler.sampling():
        before, t0 = await cpu_now(stack), time.perf_counter()
        sent = await paced(consent, tenant.key, measured, opts.rate, opts.connections)
        accepted = {s.request_id: s for s in sent if s.request_id}
        expected = len(accepted) * receivers.recipients
        if not await _until(lambda: receivers.arrived(accepted) >= expected, opts.timeout):
            progress(f"(a) not every webhook arrived within {opts.timeout:g} s after the load")
        t1, after = time.perf_counter(), await cpu_now(stack)
    ids = list(accepted)
    closed: list[Any] = []
    deadline = time.monotonic() + opts.timeout
    while time.monotonic() < deadline:
        closed = await _fetch(stack, "consent", tenant.id, _CLOSED, ids)
        if all(row["state"] == "completed" for row in closed):
            break
        await asyncio.sleep(0.5)
    fanned = await _fetch(
        stack, "consent", tenant.id, _FANNED_OUT, tenant.id, catalogue.ERASURE_REQUESTED.name, ids
    )
    deliveries = await _fetch(stack, "subprocessors", tenant.id, _DELIVERIES, tenant.id, ids)
    figures = rate_figures(sent, receivers, closed)
    figures["stages_ms"] = rate_stages(accepted, receivers, recipient_ids, fanned, deliveries)
    figures["cpu_percent_of_one_core"] = cpu.usage(before, after, t1 - t0)
    figures["machine_cpu_percent"] = cpu.machine(before, after)
    figures["cpu_window_s"] = round(t1 - t0, 1)
    figures["postgres_sessions"] = sampler.summary()
    await asyncio.sleep(STATS_FLUSH_S)
    figures["tables"] = table_deltas(tables, await table_stats(_databases(stack)))
    figures["databases"] = database_deltas(
        databases, await database_stats(stack.server_dsn), len(accepted)
    )
    figures["cpu_others_percent_of_one_core"] = others(figures)
    return figures


def others(figures: dict[str, Any]) -> float:
    """CPU of everything this bench did not start, in % of one core: the machine's busy time
    minus ours (it includes processes that came and went inside the window, which per-process
    sampling misses)."""
    busy = float(figures["machine_cpu_percent"]["busy"]) * len(os.sched_getaffinity(0))
    return round(max(0.0, busy - float(figures["cpu_percent_of_one_core"]["total"])), 1)


def rate_figures(sent: list[Sent], receivers: Receivers, closed: list[Any]) -> dict[str, Any]:
    """Latencies (ms), losses, repeats and errors of the rate run."""
    accepted = {s.request_id: s for s in sent if s.request_id}
    first = receivers.first_receipts(accepted)
    from_send, from_answer, lost = [], [], 0
    for request_id, request in accepted.items():
        got = [first.get((request_id, n)) for n in range(receivers.recipients)]
        arrived = [r.at for r in got if r is not None and r.verified]
        if len(arrived) < receivers.recipients:
            lost += 1
            continue
        from_send.append((max(arrived) - request.scheduled) * 1000)
        from_answer.append((max(arrived) - request.answered) * 1000)
    completed = [
        (row["closed_at"].timestamp() - accepted[row["request_id"]].answered) * 1000
        for row in closed
        if row["state"] == "completed" and row["closed_at"] is not None
    ]
    statuses: dict[str, int] = {}
    for request in sent:
        statuses[request.status] = statuses.get(request.status, 0) + 1
    times = [s.scheduled for s in sent]
    return {
        "requests": len(sent),
        "accepted": len(accepted),
        "statuses": statuses,
        "achieved_rate": round((len(times) - 1) / (max(times) - min(times)), 1)
        if len(times) > 1
        else None,
        "max_late_ms": round(max(((s.started - s.scheduled) * 1000 for s in sent), default=0), 1),
        "webhooks_expected": len(accepted) * receivers.recipients,
        "webhooks_received": len(first),
        "webhooks_verified": sum(1 for r in first.values() if r.verified),
        "requests_lost": lost,
        "repeated_webhooks": receivers.repeats(accepted),
        "completed": len(completed),
        "api_ms": summary([(s.answered - s.started) * 1000 for s in accepted.values()]),
        "all_recipients_from_send_ms": summary(from_send),
        "all_recipients_from_answer_ms": summary(from_answer),
        "completed_from_answer_ms": summary(completed),
    }


def rate_stages(
    accepted: dict[str, Sent],
    receivers: Receivers,
    recipient_ids: list[str],
    fanned: list[Any],
    deliveries: list[Any],
) -> dict[str, Any]:
    """Where the time goes, per request or webhook: the 202 → `ErasureRequested` queued
    (the rights worker's transaction; outbox `created_at` is the insert's clock time) →
    published (the consent relay, after the broker's ack) → the notifier's transaction that
    wrote the delivery began (`created_at` is that transaction's `now()`: the broker, the
    notifier's fetch and the batches ahead of it) → first attempt (0 when the notifier's own
    sender claimed it in that transaction) → received by the recipient (the rest of that
    transaction and its commit, a free sender slot, the HTTP request)."""
    fan = {row["request_id"]: row for row in fanned}
    first = receivers.first_receipts(accepted)
    number = {recipient: n for n, recipient in enumerate(recipient_ids)}
    fanned_out, relayed, noticed, claimed, posted = [], [], [], [], []
    for request_id, request in accepted.items():
        row = fan.get(request_id)
        if row is None:
            continue
        fanned_out.append((row["created_at"].timestamp() - request.answered) * 1000)
        if row["published_at"] is not None:
            relayed.append((row["published_at"] - row["created_at"]).total_seconds() * 1000)
    for row in deliveries:
        source = fan.get(row["request_id"])
        if source is None or source["published_at"] is None:
            continue
        noticed.append((row["created_at"] - source["published_at"]).total_seconds() * 1000)
        if row["first_attempt_at"] is None:
            continue
        claimed.append((row["first_attempt_at"] - row["created_at"]).total_seconds() * 1000)
        receipt = first.get((row["request_id"], number.get(row["recipient_id"], -1)))
        if receipt is not None:
            posted.append((receipt.at - row["first_attempt_at"].timestamp()) * 1000)
    return {
        "answer_to_fanned_out": summary(fanned_out),
        "fanned_out_to_published": summary(relayed),
        "published_to_delivery_written": summary(noticed),
        "written_to_first_attempt": summary(claimed),
        "first_attempt_to_received": summary(posted),
    }


# --- (b) bulk erasure ----------------------------------------------------------------------


async def bulk_erasure(
    stack: DevStack, tenant: Tenant, receivers: Receivers, subjects: list[str], opts: Options
) -> dict[str, Any]:
    """One tenant request erasing every subject; polled until completed; the milestones."""
    await settle(stack)
    progress(f"(b) bulk erasure of {len(subjects):,} subjects")
    series: list[dict[str, Any]] = []
    tables = await table_stats(_databases(stack))
    databases = await database_stats(stack.server_dsn)
    sampler = WaitSampler(stack.server_dsn)
    async with _client(stack, "consent", tenant.key) as client, sampler.sampling():
        before, t0 = await cpu_now(stack), time.perf_counter()
        sent_at = time.time()
        answer = await client.post(
            _PATH, json={"kind": "erasure", "requester": "tenant", "subject_ids": subjects}
        )
        answered = time.time()
        if answer.status_code != 202:
            raise BenchError(f"bulk erasure: HTTP {answer.status_code}: {answer.text[:300]}")
        request_id = str(answer.json()["id"])
        state = answer.json()["state"]
        while state not in ("completed", "rejected") and time.time() - answered < opts.bulk_timeout:
            await asyncio.sleep(POLL_S)
            document = (await client.get(f"{_PATH}/{request_id}")).json()
            state = document["state"]
            series.append(_progress_row(round(time.time() - answered, 1), document))
            if len(series) % 15 == 0:
                progress(f"(b) {series[-1]}")
    t1, after = time.perf_counter(), await cpu_now(stack)
    milestones = await _milestones(stack, tenant, request_id, sent_at, receivers)
    audit = await _audit_caught_up(stack, sent_at)
    await asyncio.sleep(STATS_FLUSH_S)
    changed = table_deltas(tables, await table_stats(_databases(stack)))
    committed = database_deltas(databases, await database_stats(stack.server_dsn), len(subjects))
    results: dict[str, Any] = {
        "subjects": len(subjects),
        "request_id": request_id,
        "state": state,
        "body_bytes": len(answer.request.content),
        "accept_s": round(answered - sent_at, 2),
        "completed_s": _after(milestones["consent"]["closed_at"], answered),
        "milestones_s": _relative(milestones, answered),
        "counts": {
            service: {k: v for k, v in found.items() if isinstance(v, int)}
            for service, found in milestones.items()
        },
        "audit": {**audit, "caught_up_s": _after(audit["last_appended_at"], answered)},
        "series": series,
        "cpu_percent_of_one_core": cpu.usage(before, after, t1 - t0),
        "machine_cpu_percent": cpu.machine(before, after),
        "cpu_window_s": round(t1 - t0, 1),
        "postgres_sessions": sampler.summary(),
        "tables": changed,
        "databases": committed,
    }
    results["cpu_others_percent_of_one_core"] = others(results)
    return results


def _progress_row(at: float, document: dict[str, Any]) -> dict[str, Any]:
    progress_ = document["progress"]
    services = {s["service"]: s["subjects"] for s in progress_["services"]}
    return {
        "t": at,
        "state": document["state"],
        "fanned_out": progress_["fanned_out"],
        **{f"{name}_erased": count for name, count in services.items()},
        "recipients_selected": progress_["recipients_selected"],
        "acknowledged": sum(r["acknowledged"] for r in progress_["recipients"]),
        "done": progress_["done"],
    }


def _after(at: datetime | None, origin: float) -> float | None:
    return None if at is None else round(at.timestamp() - origin, 1)


def _relative(milestones: dict[str, dict[str, Any]], origin: float) -> dict[str, Any]:
    return {
        service: {
            name: _after(value, origin)
            for name, value in found.items()
            if not isinstance(value, int)
        }
        for service, found in milestones.items()
    }


_OUTBOX_AFTER = """
SELECT count(*) AS n, min(created_at) AS first_created_at, max(created_at) AS last_created_at,
       max(published_at) AS last_published_at
FROM eventing_outbox WHERE event_type = $1 AND created_at >= $2
"""
_REQUEST = "SELECT fanned_out, closed_at, started_at FROM rights_requests WHERE id = $1::uuid"
_NOTICES = """
SELECT count(*) AS notices, max(selected_at) AS last_selected_at
FROM notices WHERE tenant_id = $1 AND request_id = $2
"""
_REQUEST_DELIVERIES = """
SELECT count(*) AS deliveries, max(d.created_at) AS last_created_at,
       max(d.first_attempt_at) AS last_first_attempt_at,
       max(d.acknowledged_at) AS last_acknowledged_at,
       count(*) FILTER (WHERE d.status = 'acknowledged') AS acknowledged,
       count(*) FILTER (WHERE d.attempts > 1) AS retried
FROM notices n JOIN deliveries d ON d.tenant_id = n.tenant_id AND d.notice_id = n.id
WHERE n.tenant_id = $1 AND n.request_id = $2
"""


async def _milestones(
    stack: DevStack, tenant: Tenant, request_id: str, sent_at: float, receivers: Receivers
) -> dict[str, dict[str, Any]]:
    """Per service, from its own database: how many and when the first/last happened."""
    since = datetime.fromtimestamp(sent_at, UTC)
    requested = catalogue.ERASURE_REQUESTED.name
    completed = catalogue.ERASURE_COMPLETED.name
    (fan,) = await _fetch(stack, "consent", tenant.id, _OUTBOX_AFTER, requested, since)
    (own,) = await _fetch(stack, "consent", tenant.id, _REQUEST, request_id)
    (prefs,) = await _fetch(stack, "preferences", tenant.id, _OUTBOX_AFTER, completed, since)
    (notices,) = await _fetch(stack, "subprocessors", tenant.id, _NOTICES, tenant.id, request_id)
    (sends,) = await _fetch(
        stack, "subprocessors", tenant.id, _REQUEST_DELIVERIES, tenant.id, request_id
    )
    got = [r for r in receivers.receipts if r.request_id == request_id]
    last = max((r.at for r in got), default=None)
    return {
        "consent": {
            "erasure_requested_events": int(fan["n"]),
            "fanned_out": int(own["fanned_out"]),
            "fan_out_first": fan["first_created_at"],
            "fan_out_last": fan["last_created_at"],
            "relay_last": fan["last_published_at"],
            "closed_at": own["closed_at"],
        },
        "preferences": {
            "erasure_completed_events": int(prefs["n"]),
            "erased_first": prefs["first_created_at"],
            "erased_last": prefs["last_created_at"],
            "relay_last": prefs["last_published_at"],
        },
        "subprocessors": {
            "notices": int(notices["notices"]),
            "deliveries": int(sends["deliveries"]),
            "acknowledged": int(sends["acknowledged"]),
            "retried": int(sends["retried"]),
            "webhooks_received": len(got),
            "webhooks_verified": sum(1 for r in got if r.verified),
            "notices_last": notices["last_selected_at"],
            "first_attempts_last": sends["last_first_attempt_at"],
            "acknowledged_last": sends["last_acknowledged_at"],
            "received_last": None if last is None else datetime.fromtimestamp(last, UTC),
        },
    }


async def _audit_caught_up(stack: DevStack, sent_at: float) -> dict[str, Any]:
    """After the request completed: how long until the audit log holds every event."""
    settled = await settle(stack)
    conn = await asyncpg.connect(stack.database_dsn("audit"))
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, max(appended_at) AS last FROM audit_entries"
            " WHERE appended_at >= $1",
            datetime.fromtimestamp(sent_at, UTC),
        )
    finally:
        await conn.close()
    assert row is not None
    return {"entries": int(row["n"]), "last_appended_at": row["last"], "settled_s": settled}


# --- the run -------------------------------------------------------------------------------


async def measure(opts: Options) -> dict[str, Any]:
    """Start the stack, provision, seed, run (a) and (b); the results."""
    run_id = secrets.token_hex(3)
    settings = DevStackSettings(  # CONSENTRY_* URLs honoured
        consent_port=0, audit_port=0, preferences_port=0, subprocessors_port=0
    )
    names = {s.name: f"bench_{run_id}_{s.name}" for s in SERVICES} if settings.database_url else {}
    quiet = await asyncio.to_thread(cpu.busy_now, 2.0)
    if quiet["busy"] > report.BUSY_WARNING:
        progress(f"warning: the machine is {quiet['busy']:.0f} % busy before the start")
    logs = Path(tempfile.mkdtemp(prefix="consentry-bench-rights-"))
    ok = False
    progress(f"starting the whole stack (logs in {logs})")
    try:
        with (logs / "devstack.log").open("w") as out:
            async with DevStack(
                settings,
                throwaway=True,
                durable=True,  # fsync and synchronous commit on, as in production
                database_names=names or None,
                log_dir=logs,
                out=out,
            ) as stack:
                results = await _scenarios(stack, opts, run_id)
                results["machine"] = await report.machine_info(stack.server_dsn)
        results["machine_before_start"] = quiet
        ok = True
    finally:
        for name in names.values():
            with contextlib.suppress(Exception):
                await drop_database(settings.database_url or "", name)
        if ok and not opts.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            progress(f"logs kept in {logs}")
    return results


async def _scenarios(stack: DevStack, opts: Options, run_id: str) -> dict[str, Any]:
    tenant = await provision(stack, run_id)
    await settle(stack)
    idle = await idle_cpu(stack)
    policy = await publish_policy(stack, tenant)
    count = 0 if opts.skip_rate else opts.warmup + round(opts.rate * opts.duration)
    rated = [f"bench-{run_id}-a-{n}" for n in range(count)]
    bulk = [f"bench-{run_id}-b-{n}" for n in range(0 if opts.skip_bulk else opts.bulk_subjects)]
    progress(f"seeding {len(rated) + len(bulk):,} subjects in consent and preferences")
    seeded = await seed(stack, tenant, rated + bulk, opts)
    progress(f"seeded: {seeded}")
    ports = [free_port("127.0.0.1") for _ in range(opts.recipients)]
    recipients = await register(stack, tenant, ports)
    receivers = Receivers([secret for _, secret in recipients], ack=True)
    ids = [recipient_id for recipient_id, _ in recipients]
    async with contextlib.AsyncExitStack() as serving:
        for port in ports:
            await serving.enter_async_context(serve(receivers, port))
        rate = bulk_results = None
        if rated:
            rate = await erasure_rate(stack, tenant, receivers, ids, rated, opts)
            progress(
                f"(a) p99 from answer {rate['all_recipients_from_answer_ms']['p99']} ms, "
                f"lost {rate['requests_lost']}"
            )
        if bulk:
            await deactivate(stack, tenant, ids[1:])
            bulk_results = await bulk_erasure(stack, tenant, receivers, bulk, opts)
    return {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_id": run_id,
        "parameters": {**dataclasses.asdict(opts), "results_dir": "-"},
        "tenant": tenant.how,
        "idle_cpu_percent_of_one_core": idle,
        "policy_version": policy,
        "processes": [f"{s.name} {p.name}" for s in SERVICES for p in s.processes],
        "seeding": seeded,
        "rate": rate,
        "bulk": bulk_results,
    }


async def run(opts: Options) -> dict[str, Any]:
    """Measure; write results/rights_erasure.{json,md}; return the results."""
    results = await measure(opts)
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    (opts.results_dir / "rights_erasure.json").write_text(dump(results))
    (opts.results_dir / "rights_erasure.md").write_text(markdown(results))
    progress(f"wrote {opts.results_dir / 'rights_erasure.md'} (and .json)")
    return results


_SERIES = '"series": "<series>"'


def dump(results: dict[str, Any]) -> str:
    """The results as indented JSON, with the bulk request's progress series one poll per
    line (there is one per second)."""
    bulk = results.get("bulk")
    if not bulk:
        return json.dumps(results, indent=2, default=str) + "\n"
    text = json.dumps({**results, "bulk": {**bulk, "series": "<series>"}}, indent=2, default=str)
    rows = ",\n".join(f"      {json.dumps(row)}" for row in bulk["series"])
    return text.replace(_SERIES, f'"series": [\n{rows}\n    ]', 1) + "\n"


def parse(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line into `Options`."""
    d = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench.rights_erasure", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="5 s at the rate, 5,000 in bulk")
    parser.add_argument("--rate", type=float, default=d.rate, help="erasure requests/s")
    parser.add_argument("--duration", type=float, help=f"measured s (default {d.duration:g})")
    parser.add_argument("--warmup", type=int, help=f"requests before (default {d.warmup})")
    parser.add_argument("--recipients", type=int, default=d.recipients)
    parser.add_argument("--connections", type=int, default=d.connections)
    parser.add_argument("--timeout", type=float, default=d.timeout, help="s to wait after")
    parser.add_argument(
        "--bulk-subjects",
        type=int,
        help=f"subjects of the bulk request (default {d.bulk_subjects})",
    )
    parser.add_argument("--bulk-timeout", type=float, default=d.bulk_timeout)
    parser.add_argument("--seed-concurrency", type=int, default=d.seed_concurrency)
    parser.add_argument("--skip-rate", action="store_true", help="leave out (a)")
    parser.add_argument("--skip-bulk", action="store_true", help="leave out (b)")
    parser.add_argument("--results-dir", type=Path, default=d.results_dir)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    base = dataclasses.replace(d, **QUICK) if args.quick else d
    duration = base.duration if args.duration is None else args.duration
    warmup = base.warmup if args.warmup is None else args.warmup
    bulk = base.bulk_subjects if args.bulk_subjects is None else args.bulk_subjects
    if args.rate <= 0 or duration <= 0 or args.recipients < 1 or warmup < 1:
        parser.error("--rate, --duration > 0; --recipients, --warmup >= 1")
    if not 1 <= bulk <= 100_000:
        parser.error("--bulk-subjects must be 1..100000 (the API's limit per request)")
    return Options(
        rate=args.rate,
        recipients=args.recipients,
        connections=args.connections,
        timeout=args.timeout,
        bulk_timeout=args.bulk_timeout,
        seed_concurrency=args.seed_concurrency,
        quick=args.quick,
        skip_rate=args.skip_rate,
        skip_bulk=args.skip_bulk,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
        duration=duration,
        warmup=warmup,
        bulk_subjects=bulk,
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
