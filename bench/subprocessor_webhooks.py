"""Subprocessor notifier latency: ErasureRequested on the topic → a verified webhook at every
local recipient (issue 6: p99 ≤ 2 s at 100 requests/s).

    uv run python -m bench.subprocessor_webhooks [--rate 100] [--duration 30] [--recipients 3]

Starts PostgreSQL and the broker through the dev stack, migrates a subprocessors database,
registers `--recipients` recipients of one tenant (webhook URLs on loopback, secrets sealed as
the API seals them), serves their endpoints in this process (uvicorn; each request verified
with the `standardwebhooks` library against that recipient's secret), and starts the notifier
(faust worker), the sender and the outbox relay as real processes, logged in with the service's
restricted role. After a warm-up it produces ErasureRequested events open loop at `--rate`
for `--duration` seconds and reports, per request, the time from producing the event to the
moment the LAST recipient received its verified webhook (and per webhook), with the p50 /
p90 / p99 / max, losses, duplicates and CPU per process group. Recipients answer with a
signed acknowledgement (`--ack response`, the default) or a bare 204 (`--ack none`).
Results: `results/subprocessor_webhooks.{json,md}`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
from aiokafka import AIOKafkaProducer

from bench import cpu, report
from bench.audit import BenchError
from bench.stats import summary
from bench.webhook_receivers import Receivers, serve
from consentry.devstack.broker import TopicSpec, create_topics
from consentry.devstack.postgres import drop_database, with_user
from consentry.devstack.services import SERVICES, AppRole, Service, child_env
from consentry.devstack.spawning import free_port
from consentry.devstack.stack import STARTUP_FAILURES, DevStack, DevStackSettings
from consentry.eventing import catalogue, topics
from consentry.eventing.envelope import Event, encode
from consentry.eventing.sealing import Sealer
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors import signing
from consentry.subprocessors.recipients.service import secret_context
from consentry.subprocessors.settings import DEV_SUBPROCESSORS_MASTER_KEY

RESULTS = Path(__file__).parent / "results"
APP_ROLE = "consentry_subprocessors_app"
GROUP_ROLE = "consentry_subprocessors_rw"
DLQ = topics.dead_letter_topic("subprocessor-notifier")
_FAILURES: tuple[type[BaseException], ...] = (BenchError, *STARTUP_FAILURES)


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run (see `python -m bench.subprocessor_webhooks --help`)."""

    rate: float = 100.0
    duration: float = 30.0
    recipients: int = 3
    warmup: int = 20
    ack: str = "response"  # response | none
    relay: bool = True
    timeout: float = 60.0
    results_dir: Path = RESULTS
    keep_logs: bool = False


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"bench.subprocessor_webhooks: {message}", file=sys.stderr, flush=True)


def _service() -> Service:
    """The subprocessors entry of the dev stack (built here until the stack lists it)."""
    for service in SERVICES:
        if service.name == "subprocessors":
            return dataclasses.replace(service, processes=())
    return Service(
        name="subprocessors",
        database="consentry_subprocessors",
        topics=(topics.RIGHTS, topics.RIGHTS_ANSWERS, topics.CONSENT, topics.SUBPROCESSOR, DLQ),
        migrate=(sys.executable, "-m", "consentry.subprocessors", "migrate"),
        processes=(),
        app_role=AppRole(login=APP_ROLE, member_of=GROUP_ROLE),
    )


async def register(dsn: str, tenant: uuid.UUID, ports: list[int]) -> list[str]:
    """Insert one recipient per port as `POST /v1/recipients` would; their secrets."""
    sealer = Sealer(base64.b64decode(DEV_SUBPROCESSORS_MASTER_KEY))
    shown = []
    conn = await asyncpg.connect(dsn)
    try:
        for number, port in enumerate(ports):
            recipient = uuid.uuid4()
            secret = signing.new_secret()
            await conn.execute(
                "INSERT INTO recipients (tenant_id, id, name, role, region, webhook_url,"
                " purposes, secret_sealed) VALUES ($1, $2, $3, $4, 'SE', $5, '{}', $6)",
                tenant,
                recipient,
                f"bench recipient {number}",
                ("payment", "billing", "affiliate", "joint-marketing")[number % 4],
                f"http://127.0.0.1:{port}/r/{number}",
                sealer.seal(secret, context=secret_context(tenant, recipient)),
            )
            shown.append(signing.format_secret(secret))
    finally:
        await conn.close()
    return shown


def erasure(tenant: uuid.UUID, request_id: str) -> Event:
    """ErasureRequested of a fresh subject, as the consent service publishes it."""
    ref = secrets.token_hex(32)
    message = rights_pb2.ErasureRequested(
        tenant_id=str(tenant),
        subject_ref=ref,
        request_id=request_id,
        kind=rights_pb2.REQUEST_KIND_ERASURE,
        requester=rights_pb2.REQUESTER_TENANT,
    )
    message.requested_at.GetCurrentTime()
    return Event(catalogue.ERASURE_REQUESTED, str(tenant), ref, message, "/consentry/consent")


@contextlib.asynccontextmanager
async def process(command: str, env: dict[str, str], log: IO[bytes]) -> AsyncIterator[int]:
    """`python -m consentry.subprocessors COMMAND`, stopped with SIGTERM at the end; its pid."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "consentry.subprocessors", command, env=env, stdout=log, stderr=log
    )
    try:
        yield proc.pid
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _until(done: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def load(
    producer: AIOKafkaProducer, tenant: uuid.UUID, opts: Options
) -> dict[str, tuple[float, float]]:
    """Produce ErasureRequested open loop at `rate` for `duration`: request id → (sent, acked)."""
    count = int(opts.rate * opts.duration)
    sent: dict[str, tuple[float, float]] = {}
    pending: list[asyncio.Task[None]] = []
    start = time.monotonic()

    async def acked(request_id: str, at: float, future: asyncio.Future[Any]) -> None:
        await future
        sent[request_id] = (at, time.time())

    for number in range(count):
        delay = start + number / opts.rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        record = encode(erasure(tenant, f"bench-{number}"))
        at = time.time()
        future = await producer.send(
            record.topic, record.value, key=record.key, headers=list(record.headers)
        )
        pending.append(asyncio.create_task(acked(f"bench-{number}", at, future)))
    await asyncio.gather(*pending)
    return sent


def _rate(times: list[float]) -> float | None:
    if len(times) < 2:
        return None
    return round((len(times) - 1) / max(1e-9, max(times) - min(times)), 1)


def figures(
    receivers: Receivers,
    sent: dict[str, tuple[float, float]],
    recipients: int,
    window: tuple[float, cpu.Snapshot, float, cpu.Snapshot],
    labels: dict[int, str],
) -> dict[str, Any]:
    """Latencies (ms), losses and CPU from what was sent and received."""
    mine = [r for r in receivers.receipts if r.request_id in sent]
    first = receivers.first_receipts(sent)
    per_webhook = [(r.at - sent[r.request_id][0]) * 1000 for r in first.values() if r.verified]
    per_webhook_acked = [
        (r.at - sent[r.request_id][1]) * 1000 for r in first.values() if r.verified
    ]
    complete = []
    incomplete = 0
    for request_id, (at, _acked) in sent.items():
        got = [first.get((request_id, n)) for n in range(recipients)]
        if all(r is not None and r.verified for r in got):
            complete.append((max(r.at for r in got if r is not None) - at) * 1000)
        else:
            incomplete += 1
    t0, before, t1, after = window
    return {
        "requests": len(sent),
        "webhooks_expected": len(sent) * recipients,
        "webhooks_received": len(first),
        "webhooks_verified": sum(1 for r in first.values() if r.verified),
        "requests_incomplete": incomplete,
        "repeated_deliveries": receivers.repeats(sent),
        "distinct_webhook_ids": len({r.webhook_id for r in mine}),
        "achieved_rate": round(
            len(sent)
            / max(1e-9, max(s for s, _ in sent.values()) - min(s for s, _ in sent.values())),
            1,
        )
        if len(sent) > 1
        else None,
        "produce_ack_ms": summary([(a - s) * 1000 for s, a in sent.values()]),
        "all_recipients_ms": summary(complete),
        "per_webhook_ms": summary(per_webhook),
        "per_webhook_from_broker_ack_ms": summary(per_webhook_acked),
        "cpu_percent_of_one_core": cpu.usage(
            cpu.relabel(before, labels), cpu.relabel(after, labels), t1 - t0
        ),
        "machine_cpu_percent": cpu.machine(before, after),
    }


def stages(
    receivers: Receivers, sent: dict[str, tuple[float, float]], timeline: list[asyncpg.Record]
) -> dict[str, Any]:
    """Where the time goes, per webhook: produced → delivery row written (the notifier's
    transaction start), → first attempt claimed (by a sender's claim; the same instant when
    the notifier handed it to its own sender), → received."""
    received = {
        (r.request_id, r.recipient): r.at for r in receivers.receipts if r.request_id in sent
    }
    created, claimed, posted = [], [], []
    for row in timeline:
        request_id = row["request_id"]
        if request_id not in sent or row["first_attempt_at"] is None:
            continue
        recipient = int(row["webhook_url"].rsplit("/", 1)[1])
        at_created = row["created_at"].timestamp()
        at_claimed = row["first_attempt_at"].timestamp()
        created.append((at_created - sent[request_id][0]) * 1000)
        claimed.append((at_claimed - at_created) * 1000)
        if (request_id, recipient) in received:
            posted.append((received[(request_id, recipient)] - at_claimed) * 1000)
    return {
        "produced_to_delivery_written": summary(created),
        "written_to_claimed": summary(claimed),
        "claimed_to_received": summary(posted),
    }


async def measure(opts: Options) -> dict[str, Any]:
    """Start everything, warm up, run the load, gather the figures."""
    settings = DevStackSettings(  # CONSENTRY_* URLs honoured
        consent_port=0, audit_port=0, preferences_port=0, subprocessors_port=0
    )
    name = f"bench_{secrets.token_hex(3)}_subprocessors"
    names = {"subprocessors": name} if settings.database_url else {}
    service = _service()
    quiet = await asyncio.to_thread(cpu.busy_now, 1.0)
    logs = Path(tempfile.mkdtemp(prefix="consentry-bench-subprocessors-"))
    tenant = uuid.uuid4()
    ok = False
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
                await create_topics(stack.bootstrap, [TopicSpec(t) for t in service.topics])
                owner_dsn = stack.database_dsn("subprocessors")
                ports = [free_port("127.0.0.1") for _ in range(opts.recipients)]
                secrets_ = await register(owner_dsn, tenant, ports)
                receivers = Receivers(secrets_, ack=opts.ack == "response")
                env = {
                    **os.environ,
                    **child_env(
                        database_dsn=with_user(owner_dsn, APP_ROLE),
                        bootstrap=stack.bootstrap,
                        http_host="",
                        http_port=None,
                    ),
                    "CONSENTRY_LOG_LEVEL": "WARNING",
                    "CONSENTRY_PUBLIC_URL": "http://127.0.0.1:9/",
                    "CONSENTRY_NOTIFIER_SESSION_TIMEOUT": "4",
                }
                results = await _run(stack, opts, tenant, receivers, ports, env, logs, quiet)
        ok = True
    finally:
        if names:
            with contextlib.suppress(Exception):
                await drop_database(settings.database_url or "", name)
        if ok and not opts.keep_logs:
            shutil.rmtree(logs, ignore_errors=True)
        else:
            progress(f"logs kept in {logs}")
    return results


async def _run(
    stack: DevStack,
    opts: Options,
    tenant: uuid.UUID,
    receivers: Receivers,
    ports: list[int],
    env: dict[str, str],
    logs: Path,
    quiet: dict[str, float],
) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap, acks="all", linger_ms=1)
    labels: dict[int, str] = {}
    async with contextlib.AsyncExitStack() as running:
        for port in ports:
            await running.enter_async_context(serve(receivers, port))
        commands = ["notifier", "sender"] + (["relay"] if opts.relay else [])
        for command in commands:
            log = running.enter_context((logs / f"subprocessors.{command}.log").open("wb"))
            pid = await running.enter_async_context(process(command, env, log))
            labels[pid] = f"subprocessors {command}"
        await producer.start()
        running.push_async_callback(producer.stop)

        progress(f"warming up ({opts.warmup} requests until every recipient has them)")
        warm = [f"warmup-{n}" for n in range(opts.warmup)]
        for request_id in warm:
            record = encode(erasure(tenant, request_id))
            await producer.send_and_wait(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
        wanted = set(warm)
        if not await _until(lambda: receivers.arrived(wanted) >= len(warm) * opts.recipients, 120):
            raise BenchError("the warm-up webhooks did not all arrive within 120 s")

        progress(f"{opts.rate:g} erasure requests/s for {opts.duration:g} s")
        before = cpu.relabel(cpu.snapshot(), labels)
        t0 = time.perf_counter()
        sent = await load(producer, tenant, opts)
        expected = len(sent) * opts.recipients
        arrived = await _until(lambda: receivers.arrived(sent) >= expected, opts.timeout)
        t1 = time.perf_counter()
        after = cpu.relabel(cpu.snapshot(), labels)
        if not arrived:
            progress(f"not every webhook arrived within {opts.timeout:g} s after the load")
        conn = await asyncpg.connect(stack.database_dsn("subprocessors"))
        try:
            rows = await conn.fetch(
                "SELECT status, count(*) AS n FROM deliveries WHERE tenant_id = $1 GROUP BY status",
                tenant,
            )
            states = {str(row["status"]): int(row["n"]) for row in rows}
            timeline = await conn.fetch(
                "SELECT n.request_id, r.webhook_url, d.created_at, d.first_attempt_at"
                " FROM deliveries d JOIN notices n ON n.tenant_id = d.tenant_id"
                " AND n.id = d.notice_id JOIN recipients r ON r.id = d.recipient_id"
                " WHERE d.tenant_id = $1",
                tenant,
            )
        finally:
            await conn.close()
        measured = figures(receivers, sent, opts.recipients, (t0, before, t1, after), labels)
        measured["stages_ms"] = stages(receivers, sent, timeline)
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": await report.machine_info(stack.server_dsn),
            "machine_before_start": quiet,
            "parameters": {**dataclasses.asdict(opts), "results_dir": "-"},
            "delivery_states": states,
            **measured,
        }
    raise AssertionError("unreachable")


async def run(opts: Options) -> dict[str, Any]:
    """Measure; write results/subprocessor_webhooks.{json,md}; return the results."""
    results = await measure(opts)
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    (opts.results_dir / "subprocessor_webhooks.json").write_text(
        json.dumps(results, indent=2) + "\n"
    )
    (opts.results_dir / "subprocessor_webhooks.md").write_text(markdown(results))
    progress(f"wrote {opts.results_dir / 'subprocessor_webhooks.md'} (and .json)")
    return results


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown(results: dict[str, Any], level: int = 1) -> str:
    """The results as markdown; `level` is the heading level of its title."""
    p, m = results["parameters"], results["machine"]
    pg = m["postgresql"]
    title = "#" * level
    target = results["all_recipients_ms"]["p99"]
    verdict = "-" if target is None else ("met" if target <= 2000 else "**not met**")
    lines = [
        f"{title} Subprocessor webhooks: erasure → verified webhook, {results['when']}",
        "",
        f"{m['usable_cpus']} CPU cores ({m['cpu_model']}), Python {m['python']}, PostgreSQL "
        f"{pg['server_version']} (fsync={pg['fsync']}, synchronous_commit="
        f"{pg['synchronous_commit']}), Tansu (memory); the notifier (faust worker), the sender, "
        f"the relay ({'running' if p['relay'] else 'not running'}), the {p['recipients']} "
        "receivers (this process, one uvicorn server each on loopback) and the load share "
        "these cores.",
        "",
        f"{results['requests']:,} ErasureRequested events produced open loop at {p['rate']:g}/s "
        f"(achieved {results['achieved_rate']}/s) for {p['duration']:g} s, one tenant with "
        f"{p['recipients']} recipients; recipients answer "
        + (
            "with a signed acknowledgement."
            if p["ack"] == "response"
            else "204 (no acknowledgement)."
        )
        + f" Target (issue 6): p99 ≤ 2000 ms to every recipient — {verdict}.",
        "",
        "| measure | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in (
        ("**produced → every recipient has a verified webhook**", "all_recipients_ms"),
        ("produced → one webhook received (each)", "per_webhook_ms"),
        ("broker ack of the event → webhook received", "per_webhook_from_broker_ack_ms"),
        ("produce → broker ack", "produce_ack_ms"),
    ):
        s = results[key]
        lines.append(
            f"| {label} | {s['n']:,} | {_ms(s['p50'])} | {_ms(s['p90'])} | {_ms(s['p99'])} "
            f"| {_ms(s['max'])} |"
        )
    stage = results["stages_ms"]
    for label, key in (
        ("stage: produced → delivery row written (notifier)", "produced_to_delivery_written"),
        ("stage: written → attempt claimed (0: handed over)", "written_to_claimed"),
        ("stage: claimed → received (commit, slot, HTTP)", "claimed_to_received"),
    ):
        s = stage[key]
        lines.append(
            f"| {label} | {s['n']:,} | {_ms(s['p50'])} | {_ms(s['p90'])} | {_ms(s['p99'])} "
            f"| {_ms(s['max'])} |"
        )
    usage = results["cpu_percent_of_one_core"]
    lines += [
        "",
        f"Webhooks expected {results['webhooks_expected']:,}, received "
        f"{results['webhooks_received']:,}, verified {results['webhooks_verified']:,}; "
        f"requests not complete {results['requests_incomplete']}; repeated deliveries "
        f"{results['repeated_deliveries']}. Delivery states afterwards: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(results["delivery_states"].items()))
        + ".",
        "",
        "CPU from the start of the load until every webhook arrived, % of one core: "
        + ", ".join(f"{role} {value:.0f}" for role, value in usage.items() if role != "total")
        + f"; ours in total {usage['total']:.0f}. Machine busy "
        f"{results['machine_cpu_percent']['busy']:.0f} % of all cores.",
    ]
    return "\n".join(lines) + "\n"


def parse(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line into `Options`."""
    d = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench.subprocessor_webhooks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--rate", type=float, default=d.rate, help="erasure requests/s")
    parser.add_argument("--duration", type=float, default=d.duration, help="measured s")
    parser.add_argument("--recipients", type=int, default=d.recipients)
    parser.add_argument("--warmup", type=int, default=d.warmup, help="requests before")
    parser.add_argument("--ack", choices=("response", "none"), default=d.ack)
    parser.add_argument("--no-relay", action="store_true", help="do not run the outbox relay")
    parser.add_argument("--timeout", type=float, default=d.timeout, help="s to wait after")
    parser.add_argument("--results-dir", type=Path, default=d.results_dir)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.duration <= 0 or args.recipients < 1 or args.warmup < 1:
        parser.error("--rate, --duration > 0; --recipients, --warmup >= 1")
    return Options(
        rate=args.rate,
        duration=args.duration,
        recipients=args.recipients,
        warmup=args.warmup,
        ack=args.ack,
        relay=not args.no_relay,
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
