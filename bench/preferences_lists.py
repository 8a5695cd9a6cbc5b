"""Marketing lists (issue 5): one-click unsubscribe → suppressed in the list API, and the filter.

    uv run python -m bench.preferences_lists [--quick] [--rate 1000] [--duration 60]

Starts PostgreSQL and the broker through the dev stack, then the preferences service's
processes for real (API, outbox relay, marketing-list processor, each logged in as the
service's restricted role) and:

1. **Unsubscribes**: `--rate` one-click unsubscribes per second for `--duration` s, open loop
   (each request leaves at its scheduled time, over a pool of keep-alive connections): `POST
   /u/{token}` with `List-Unsubscribe=One-Click` (RFC 8058; the links module's page), each for
   a new subject and "all marketing". The tokens are minted with the tenant's link key, as
   `POST /v1/subjects/{id}/unsubscribe-links` does. Every `--poll-interval` s the bench asks
   the filter API (`POST /v1/lists/{topic}/filter`) about every subject whose POST left and
   that is not suppressed yet; the latency of one unsubscribe runs from its scheduled send
   time to the filter answer that first shows it `unsubscribed` (so it includes up to one
   poll interval). Loss = POSTs answered 200 whose subject never shows up suppressed.
   Sampled every 0.5 s: the backlog (unsubscribes accepted, not yet suppressed), the outbox
   rows not yet published, and the processor's own consumer lag (records behind the
   high-water mark, from its log). Plot: `results/preferences_lists_lag.png`.
2. **Processor throughput on a backlog**: `--list-size` subjects subscribed to the list,
   as events put straight on the consent and preferences topics (consent given, subscribed),
   and the time until the processor has applied them all.
3. **Filter throughput**: closed loop of filter calls with `--filter-sizes` refs (90 % list
   members, 10 % unknown), at each `--filter-concurrency`, for `--filter-seconds` s each:
   refs checked per second (every answer is checked against the known truth).

Results: `results/preferences_lists.{json,md}` (and the PNG); `make bench` runs it after the
other scenarios (`--skip-preferences-lists` to leave it out, `--lists-quick` for the short
form).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import random
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import asyncpg
import psutil
from aiokafka import AIOKafkaProducer

from bench import cpu, report
from bench.audit import BenchError
from bench.rawhttp import HttpConnection, ProtocolError, RequestBuilder
from bench.stats import summary
from consentry.devstack.postgres import drop_database, with_user
from consentry.devstack.services import SERVICES, child_env
from consentry.devstack.spawning import free_port
from consentry.devstack.stack import STARTUP_FAILURES, DevStack, DevStackSettings
from consentry.eventing import topics
from consentry.eventing.directory import subject_key_context
from consentry.eventing.envelope import KafkaRecord, encode, utcnow
from consentry.eventing.sealing import Sealer
from consentry.eventing.testing import consent_event
from consentry.preferences.links import service as links
from consentry.preferences.links import tokens
from consentry.preferences.settings import DEV_PREFERENCES_MASTER_KEY
from consentry.preferences.subjects import events as preference_events
from consentry.preferences.subjects.models import Method
from consentry.preferences.tenants import TenantKeys, kek_context, link_key_context, load_keys

RESULTS = Path(__file__).parent / "results"
APP_ROLE = "consentry_preferences_app"
TENANT_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")  # the dev key's tenant
TOPIC = "product-news"
PROCESSOR = "list-processor"
SAMPLE_S = 0.5
READY_TIMEOUT_S = 60.0
TARGETS = {"unsubscribe_p99_ms": 1000.0, "rate": 1000.0, "filter_refs_per_s": 500_000.0}
_FAILURES: tuple[type[BaseException], ...] = (BenchError, *STARTUP_FAILURES)
_ONE_CLICK = b"List-Unsubscribe=One-Click"
_ROLES = (
    ("consentry.preferences list-processor", "list processor"),
    ("consentry.preferences relay", "preferences relay"),
    ("consentry.preferences api", "preferences api"),
)


@dataclasses.dataclass(frozen=True)
class Options:
    """What to run (see `python -m bench.preferences_lists --help`)."""

    rate: float = 1000.0
    duration: float = 60.0
    connections: int = 64
    poll_interval: float = 0.1
    drain_timeout: float = 30.0
    list_size: int = 100_000
    filter_sizes: tuple[int, ...] = (10_000, 100_000)
    filter_concurrency: tuple[int, ...] = (1, 2)
    filter_seconds: float = 10.0
    quick: bool = False
    results_dir: Path = RESULTS
    keep_logs: bool = False


QUICK = {"duration": 10.0, "list_size": 20_000, "filter_sizes": (10_000,), "filter_seconds": 3.0}


def progress(message: str) -> None:
    """A progress line on stderr."""
    print(f"bench.preferences_lists: {message}", file=sys.stderr, flush=True)


# --- processes


def _role(proc: psutil.Process) -> str:
    try:
        line = " ".join(proc.cmdline())
    except psutil.Error:
        return cpu.role(proc)
    for needle, label in _ROLES:
        module, _, command = needle.partition(" ")
        if f"-m {module}" in line and (not command or line.endswith(f" {command}")):
            return label
    return cpu.role(proc)


def snapshot() -> cpu.Snapshot:
    """`cpu.snapshot()` with the preferences processes named."""
    taken = cpu.snapshot()
    relabelled = dict(taken.procs)
    for child in psutil.Process().children(recursive=True):
        if child.pid in relabelled:
            relabelled[child.pid] = (_role(child), relabelled[child.pid][1])
    return cpu.Snapshot(relabelled, taken.machine)


@contextlib.asynccontextmanager
async def service_process(
    argv: Sequence[str], env: dict[str, str], log: IO[bytes]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A service process, stopped with SIGTERM (then SIGKILL) at the end."""
    proc = await asyncio.create_subprocess_exec(*argv, env=env, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), timeout=20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def provision(owner_dsn: str) -> TenantKeys:
    """Write the dev tenant as the tenant directory would; its opened keys."""
    sealer = Sealer(base64.b64decode(DEV_PREFERENCES_MASTER_KEY))
    conn = await asyncpg.connect(owner_dsn)
    try:
        await conn.execute(
            "INSERT INTO tenants (id, name, subject_key_sealed, kek_sealed, link_key_sealed,"
            " provisioned_at) VALUES ($1, 'Bench tenant', $2, $3, $4, now())",
            TENANT_ID,
            sealer.seal(secrets.token_bytes(32), context=subject_key_context(TENANT_ID)),
            sealer.seal(secrets.token_bytes(32), context=kek_context(TENANT_ID)),
            sealer.seal(secrets.token_bytes(32), context=link_key_context(TENANT_ID)),
        )
        keys = await load_keys(conn, sealer, TENANT_ID)
    finally:
        await conn.close()
    assert keys is not None
    return keys


async def wait_ready(host: str, port: int, proc: asyncio.subprocess.Process) -> None:
    """Until the API answers /healthz."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    conn = HttpConnection(host, port)
    builder = RequestBuilder(host, port)
    try:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                raise BenchError(f"the preferences API exited with code {proc.returncode}")
            with contextlib.suppress(OSError, ProtocolError):
                status, _ = await conn.request(builder.get("/healthz"))
                if status == 200:
                    return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise BenchError(f"the preferences API did not answer within {READY_TIMEOUT_S:.0f} s")


# --- HTTP


class Api:
    """The preferences API's endpoints the bench uses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.builder = RequestBuilder(host, port)
        self._head = f"Host: {host}:{port}\r\n".encode()

    def one_click(self, token: str) -> bytes:
        """`POST /u/{token}` with the RFC 8058 body (no API key: the token is the credential)."""
        return (
            b"POST /u/" + token.encode() + b" HTTP/1.1\r\n" + self._head
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(_ONE_CLICK) + _ONE_CLICK
        )  # fmt: skip

    def put_json(self, target: str, document: Any) -> bytes:
        """`PUT target` with `document` as its JSON body (with the dev API key)."""
        return b"PUT" + self.builder.post_json(target, document)[len(b"POST") :]

    def filter(self, refs: Sequence[str]) -> bytes:
        """`POST /v1/lists/{TOPIC}/filter` for `refs`."""
        body = b'{"channel":"email","subject_refs":["' + '","'.join(refs).encode() + b'"]}'
        return self.builder.post(f"/v1/lists/{TOPIC}/filter", body)


async def filter_call(conn: HttpConnection, api: Api, refs: Sequence[str]) -> dict[str, Any]:
    """One filter call; its decoded answer."""
    status, body = await conn.request(api.filter(refs))
    if status != 200:
        raise BenchError(f"filter: HTTP {status}: {body[:300]!r}")
    answer: dict[str, Any] = json.loads(body)
    return answer


async def put_topic(api: Api) -> None:
    """The marketing topic the bench's list is about."""
    conn = HttpConnection(api.host, api.port)
    document = {"category": "marketing", "channels": ["email", "sms"], "labels": {"en": "News"}}
    try:
        status, body = await conn.request(api.put_json(f"/v1/topics/{TOPIC}", document))
    finally:
        await conn.close()
    if status not in (200, 201):
        raise BenchError(f"creating the topic: HTTP {status}: {body[:300]!r}")


# --- 1. unsubscribes


@dataclasses.dataclass
class Unsubscribe:
    """One subject's one-click unsubscribe, as the bench saw it (monotonic seconds)."""

    ref: str
    request: bytes
    record: KafkaRecord | None = None  # scenario 1b: the event itself
    scheduled: float = 0.0
    sent: float | None = None
    answered: float | None = None
    status: int | None = None
    seen: float | None = None


def mint(keys: TenantKeys, api: Api, count: int, prefix: str) -> list[Unsubscribe]:
    """`count` new subjects with their one-click request (token for all marketing)."""
    out = []
    for n in range(count):
        ref = keys.subject_ref(f"{prefix}-{n}")
        token, _ = links.issue_link(
            keys, purpose=tokens.Purpose.UNSUBSCRIBE, subject_ref=ref, days=365
        )
        out.append(Unsubscribe(ref, api.one_click(token)))
    return out


class Watcher:
    """Polls the filter API for the subjects whose POST left and that are not suppressed yet."""

    def __init__(self, api: Api, interval: float) -> None:
        self.api = api
        self.interval = interval
        self.pending: dict[str, Unsubscribe] = {}
        self.polls = 0
        self.poll_ms: list[float] = []
        self.load_done = False
        self.drained = asyncio.Event()  # set once the load is done and nothing is pending
        self._conn = HttpConnection(api.host, api.port)

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until `stop` is set."""
        try:
            while not stop.is_set():
                await self.poll()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval)
        finally:
            await self._conn.close()

    async def poll(self) -> None:
        """One round: every pending subject, 20,000 per call."""
        refs = list(self.pending)
        for at in range(0, len(refs), 20_000):
            started = time.monotonic()
            answer = await filter_call(self._conn, self.api, refs[at : at + 20_000])
            now = time.monotonic()
            self.poll_ms.append((now - started) * 1000)
            self.polls += 1
            for item in answer["suppressed"]:
                if item["reason"] == "unsubscribed":
                    one = self.pending.pop(item["subject_ref"], None)
                    if one is not None:
                        one.seen = now
        if self.load_done and not self.pending:
            self.drained.set()


async def unsubscribe_load(
    api: Api, work: list[Unsubscribe], opts: Options, watcher: Watcher, started: asyncio.Event
) -> float:
    """Send the requests open loop at `opts.rate`; return when all are answered (the start)."""
    pool: asyncio.Queue[HttpConnection] = asyncio.Queue()
    for _ in range(opts.connections):
        pool.put_nowait(HttpConnection(api.host, api.port))

    async def one(item: Unsubscribe) -> None:
        conn = await pool.get()
        try:
            item.sent = time.monotonic()
            watcher.pending[item.ref] = item
            try:
                item.status, _ = await conn.request(item.request)
            except (OSError, ProtocolError):
                item.status = 0
            item.answered = time.monotonic()
        finally:
            pool.put_nowait(conn)

    began = time.monotonic()
    for n, item in enumerate(work):
        item.scheduled = began + n / opts.rate
    started.set()
    tasks = []
    for item in work:
        delay = item.scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(item)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        await pool.get_nowait().close()
    return began


async def sample(
    stop: asyncio.Event, began: list[float], work: list[Unsubscribe], owner_dsn: str
) -> list[dict[str, float]]:
    """Every SAMPLE_S: backlog (accepted, not yet suppressed) and unpublished outbox rows."""
    samples: list[dict[str, float]] = []
    conn = await asyncpg.connect(owner_dsn)
    try:
        while not stop.is_set():
            now = time.monotonic()
            if began:
                accepted = sum(1 for w in work if w.status == 200 and w.answered is not None)
                seen = sum(1 for w in work if w.seen is not None)
                unpublished = await conn.fetchval(
                    "SELECT count(*) FROM eventing_outbox WHERE published_at IS NULL"
                )
                samples.append(
                    {
                        "t": round(now - began[0], 3),
                        "sent": sum(1 for w in work if w.sent is not None),
                        "accepted": accepted,
                        "suppressed": seen,
                        "backlog": accepted - min(seen, accepted),
                        "outbox_unpublished": int(unpublished),
                    }
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_S)
    finally:
        await conn.close()
    return samples


async def topic_load(
    bootstrap: str,
    work: list[Unsubscribe],
    opts: Options,
    watcher: Watcher,
    started: asyncio.Event,
) -> float:
    """Put the work's events on the preferences topic open loop at `opts.rate` (as the relay
    would: acks=all); return the start. `status` 200 = acknowledged by the broker."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        began = time.monotonic()
        for n, item in enumerate(work):
            item.scheduled = began + n / opts.rate
        started.set()
        pending: list[tuple[Unsubscribe, asyncio.Future[Any]]] = []
        for item in work:
            delay = item.scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            record = item.record
            assert record is not None
            item.sent = time.monotonic()
            watcher.pending[item.ref] = item
            future = await producer.send(
                record.topic, record.value, key=record.key, headers=list(record.headers)
            )
            pending.append((item, future))
            if len(pending) >= 200:
                await _acknowledged(pending)
        await _acknowledged(pending)
    finally:
        await producer.stop()
    return began


async def _acknowledged(pending: list[tuple[Unsubscribe, asyncio.Future[Any]]]) -> None:
    for item, future in pending:
        try:
            await future
            item.status = 200
        except Exception:
            item.status = 0
        item.answered = time.monotonic()
    pending.clear()


def topic_work(keys: TenantKeys, count: int, prefix: str) -> list[Unsubscribe]:
    """`count` new subjects, each with its `preferences.unsubscribed` (all marketing) event."""
    at = utcnow()
    out = []
    for n in range(count):
        ref = keys.subject_ref(f"{prefix}-{n}")
        event = preference_events.unsubscribed(
            tenant_id=TENANT_ID,
            subject_ref=ref,
            version=1,
            topic=None,
            channels=(),
            method=Method.ONE_CLICK,
            at=at,
        )
        out.append(Unsubscribe(ref, b"", record=encode(event)))
    return out


async def unsubscribes(
    api: Api,
    keys: TenantKeys,
    opts: Options,
    owner_dsn: str,
    run_id: str,
    *,
    bootstrap: str | None = None,
) -> dict[str, Any]:
    """Scenario 1 (see the module docstring); with `bootstrap`, 1b: the events go straight
    onto the preferences topic instead of through the API and the relay."""
    count = round(opts.rate * opts.duration)
    if bootstrap is None:
        progress(f"minting {count} one-click unsubscribe links")
        work = mint(keys, api, count, f"bench-{run_id}-u")
    else:
        progress(f"encoding {count} preferences.unsubscribed events")
        work = await asyncio.to_thread(topic_work, keys, count, f"bench-{run_id}-t")
    watcher = Watcher(api, opts.poll_interval)
    stop_watch, stop_sample = asyncio.Event(), asyncio.Event()
    began: list[float] = []
    watching = asyncio.create_task(watcher.run(stop_watch))
    sampling = asyncio.create_task(sample(stop_sample, began, work, owner_dsn))
    what = "one-click unsubscribes" if bootstrap is None else "unsubscribed events on the topic"
    progress(f"{opts.rate:g} {what}/s for {opts.duration:g} s")
    before = (time.perf_counter(), snapshot())
    started = asyncio.Event()
    loading = asyncio.create_task(
        unsubscribe_load(api, work, opts, watcher, started)
        if bootstrap is None
        else topic_load(bootstrap, work, opts, watcher, started)
    )
    await started.wait()
    began.append(work[0].scheduled)
    first_post_at = datetime.now(UTC) - timedelta(seconds=time.monotonic() - began[0])
    start = await loading
    after = (time.perf_counter(), snapshot())
    watcher.load_done = True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(watcher.drained.wait(), opts.drain_timeout)
    drained = time.monotonic()
    stop_watch.set()
    await watching
    stop_sample.set()
    samples = await sampling
    figures = _unsubscribe_figures(work, start, drained, watcher, samples, before, after, opts)
    figures["first_post_at"] = first_post_at.isoformat()
    return figures


def _unsubscribe_figures(
    work: list[Unsubscribe],
    start: float,
    drained: float,
    watcher: Watcher,
    samples: list[dict[str, float]],
    before: tuple[float, cpu.Snapshot],
    after: tuple[float, cpu.Snapshot],
    opts: Options,
) -> dict[str, Any]:
    ok = [w for w in work if w.status == 200]
    seen = [w for w in ok if w.seen is not None]
    last_answer = max((w.answered or start) for w in work)
    window = last_answer - start
    per_second: dict[int, list[float]] = {}
    for w in seen:
        assert w.seen is not None
        per_second.setdefault(int(w.scheduled - start), []).append((w.seen - w.scheduled) * 1000)
    statuses: dict[str, int] = {}
    for w in work:
        statuses[str(w.status)] = statuses.get(str(w.status), 0) + 1
    (t0, cpu0), (t1, cpu1) = before, after
    return {
        "requests": len(work),
        "answered_200": len(ok),
        "statuses": statuses,
        "sent_rate_per_s": round(len(work) / window, 1) if window else None,
        "accepted_rate_per_s": round(len(ok) / window, 1) if window else None,
        "window_s": round(window, 2),
        "post_ms": summary([((w.answered or 0) - (w.sent or 0)) * 1000 for w in ok]),
        "send_delay_ms": summary([((w.sent or 0) - w.scheduled) * 1000 for w in work]),
        "suppressed_ms": summary([((w.seen or 0) - w.scheduled) * 1000 for w in seen]),
        "suppressed_after_answer_ms": summary(
            [((w.seen or 0) - (w.answered or 0)) * 1000 for w in seen]
        ),
        "lost": len(ok) - len(seen),
        "drain_after_last_answer_s": round(drained - last_answer, 2),
        "polls": watcher.polls,
        "poll_ms": summary(watcher.poll_ms),
        "per_second_p99_ms": {str(s): summary(v)["p99"] for s, v in sorted(per_second.items())},
        "samples": samples,
        "cpu_percent_of_one_core": cpu.usage(cpu0, cpu1, t1 - t0),
        "machine_cpu_percent": cpu.machine(cpu0, cpu1),
        "poll_interval_s": opts.poll_interval,
    }


def processor_lag(log: Path, zero: datetime, until: float) -> list[dict[str, float]]:
    """The processor's own lag lines (records behind the high-water mark), in seconds since
    `zero` (the first POST), up to `until`."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            entry = json.loads(line)
            if entry.get("event") != "list processor lag":
                continue
            at = datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00"))
            t = (at - zero).total_seconds()
            if not -2 <= t <= until:
                continue
            found.append(
                {
                    "t": round(t, 3),
                    "lag": entry["lag"],
                    "applied": entry["applied"],
                }
            )
    return found


# --- 2. a list, through the processor


async def seed_list(bootstrap: str, owner_dsn: str, size: int) -> tuple[list[str], dict[str, Any]]:
    """`size` members of the list (consent given, subscribed), as events on the topics; the
    time the processor took to apply them."""
    progress(f"encoding {2 * size} events: {size} subjects given consent and subscribed")
    refs = [secrets.token_hex(32) for _ in range(size)]

    def encoded() -> list[Any]:
        out = []
        at = utcnow()
        for ref in refs:
            for event in (
                consent_event(str(TENANT_ID), ref, 1, purpose="marketing-email"),
                preference_events.updated(
                    tenant_id=TENANT_ID,
                    subject_ref=ref,
                    version=1,
                    changes=[(TOPIC, "email", True, "marketing")],
                    method=Method.API,
                    at=at,
                ),
            ):
                out.append(encode(event))
        return out

    records = await asyncio.to_thread(encoded)
    conn = await asyncpg.connect(owner_dsn)
    count = "SELECT count(*) FROM list_members WHERE tenant_id = $1 AND blocked IS NULL"
    try:
        base = int(await conn.fetchval(count, TENANT_ID))
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20
        )
        await producer.start()
        progress(f"producing {len(records)} events; the processor applies them as they come")
        started = time.perf_counter()
        try:
            for at in range(0, len(records), 5000):
                sent = [
                    await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers))
                    for r in records[at : at + 5000]
                ]
                await asyncio.gather(*sent)
        finally:
            await producer.stop()
        produced = time.perf_counter() - started
        deadline = time.monotonic() + 300
        while (done := int(await conn.fetchval(count, TENANT_ID)) - base) < size:
            if time.monotonic() > deadline:
                raise BenchError(f"only {done} of {size} members applied after 300 s")
            await asyncio.sleep(0.1)
        applied = time.perf_counter() - started
        await conn.execute("ANALYZE list_members, list_subjects, list_suppressions")
    finally:
        await conn.close()
    return refs, {
        "members": size,
        "events": len(records),
        "produce_s": round(produced, 2),
        "applied_s": round(applied, 2),
        "events_per_s": round(len(records) / applied),
    }


# --- 3. the filter


async def filter_throughput(api: Api, members: list[str], opts: Options) -> list[dict[str, Any]]:
    """Closed-loop filter calls per size and concurrency; refs/s, answers checked."""
    runs = []
    rng = random.Random(5)
    for size in opts.filter_sizes:
        known = rng.sample(members, min(len(members), size - size // 10))
        unknown = [secrets.token_hex(32) for _ in range(size - len(known))]
        refs = known + unknown
        rng.shuffle(refs)
        request = api.filter(refs)
        expected = set(known)
        for concurrency in opts.filter_concurrency:
            progress(f"filter: {size:,} refs per call, concurrency {concurrency}")
            runs.append(
                await _filter_run(api, request, refs, expected, concurrency, opts.filter_seconds)
            )
            progress(f"  {runs[-1]['refs_per_s']:,} refs/s")
    return runs


async def _filter_run(
    api: Api,
    request: bytes,
    refs: list[str],
    expected: set[str],
    concurrency: int,
    seconds: float,
) -> dict[str, Any]:
    calls: list[float] = []
    wrong = 0
    stop_at = time.monotonic() + seconds
    before = (time.perf_counter(), snapshot())

    async def worker() -> None:
        nonlocal wrong
        conn = HttpConnection(api.host, api.port)
        try:
            while time.monotonic() < stop_at:
                started = time.monotonic()
                status, body = await conn.request(request)
                if status != 200:
                    raise BenchError(f"filter: HTTP {status}: {body[:300]!r}")
                calls.append((time.monotonic() - started) * 1000)
                if len(calls) <= concurrency:  # check the first answers fully
                    answer = json.loads(body)
                    wrong += set(answer["sendable"]) != expected
                    wrong += len(answer["sendable"]) + len(answer["suppressed"]) != len(refs)
        finally:
            await conn.close()

    began = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    window = time.monotonic() - began
    after = (time.perf_counter(), snapshot())
    return {
        "refs_per_call": len(refs),
        "concurrency": concurrency,
        "calls": len(calls),
        "window_s": round(window, 2),
        "refs_per_s": round(len(calls) * len(refs) / window),
        "call_ms": summary(calls),
        "wrong_answers": wrong,
        "request_bytes": len(request),
        "cpu_percent_of_one_core": cpu.usage(before[1], after[1], after[0] - before[0]),
    }


# --- the run


async def measure(opts: Options) -> dict[str, Any]:
    """Start the stack, run the three scenarios, return every figure."""
    run_id = secrets.token_hex(3)
    settings = DevStackSettings(
        consent_port=0, audit_port=0, preferences_port=0, subprocessors_port=0
    )
    names = {"preferences": f"bench_{run_id}_preferences"} if settings.database_url else {}
    found = [s for s in SERVICES if s.name == "preferences"]
    if not found:
        raise BenchError("the dev stack has no preferences service")
    dlq = topics.dead_letter_topic(PROCESSOR)
    service = dataclasses.replace(
        found[0], topics=(*found[0].topics, topics.CONSENT, dlq), processes=()
    )
    quiet = await asyncio.to_thread(cpu.busy_now, 1.0)
    logs = Path(tempfile.mkdtemp(prefix="consentry-bench-lists-"))
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
                results = await _with_stack(stack, opts, logs, run_id)
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


async def _with_stack(stack: DevStack, opts: Options, logs: Path, run_id: str) -> dict[str, Any]:
    owner_dsn = stack.database_dsn("preferences")
    keys = await provision(owner_dsn)
    host, port = "127.0.0.1", free_port()
    env = {
        **os.environ,
        **child_env(
            database_dsn=with_user(owner_dsn, APP_ROLE),
            bootstrap=stack.bootstrap,
            http_host=host,
            http_port=port,
        ),
        "CONSENTRY_LIST_PROCESSOR_NAME": PROCESSOR,
        "CONSENTRY_LIST_PROCESSOR_LAG_LOG_SECONDS": str(SAMPLE_S),
        "CONSENTRY_PUBLIC_URL": f"http://{host}:{port}",
    }
    argv = {
        "api": [sys.executable, "-m", "consentry.preferences", "api"],
        "relay": [sys.executable, "-m", "consentry.preferences", "relay"],
        "processor": [sys.executable, "-m", "consentry.preferences", "list-processor"],
    }
    api = Api(host, port)
    async with contextlib.AsyncExitStack() as processes:
        procs = {}
        for name, command in argv.items():
            log = processes.enter_context((logs / f"{name}.log").open("wb"))
            procs[name] = await processes.enter_async_context(service_process(command, env, log))
        await wait_ready(host, port, procs["api"])
        await put_topic(api)
        progress("warming up: unsubscribes until the whole pipeline answers")
        warmup = await _warm_up(api, keys, run_id)
        results: dict[str, Any] = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "parameters": {**dataclasses.asdict(opts), "results_dir": "-"},
            "targets": TARGETS,
            "warmup_s": warmup,
            "unsubscribe_path": "POST /u/{token} (one-click, RFC 8058; all marketing)",
        }
        results["unsubscribes"] = await unsubscribes(api, keys, opts, owner_dsn, run_id)
        results["unsubscribes"] = _with_lag(results["unsubscribes"], logs)
        results["topic_unsubscribes"] = _with_lag(
            await unsubscribes(api, keys, opts, owner_dsn, run_id, bootstrap=stack.bootstrap),
            logs,
        )
        members, results["seeding"] = await seed_list(stack.bootstrap, owner_dsn, opts.list_size)
        progress(f"  {results['seeding']['events_per_s']:,} events/s applied by the processor")
        results["filter"] = await filter_throughput(api, members, opts)
        results["processor_dead_letters"] = _dead_letters(logs / "processor.log")
        for name, proc in procs.items():
            if proc.returncode is not None:
                raise BenchError(f"the {name} process exited early ({proc.returncode})")
    return results


def _with_lag(figures: dict[str, Any], logs: Path) -> dict[str, Any]:
    """The scenario's figures with the processor's lag over its window."""
    zero = datetime.fromisoformat(figures["first_post_at"])
    until = figures["window_s"] + figures["drain_after_last_answer_s"] + 3
    figures["processor_lag"] = processor_lag(logs / "processor.log", zero, until)
    return figures


def _dead_letters(log: Path) -> int:
    return sum(
        1 for line in log.read_text(errors="replace").splitlines() if "dead-lettered" in line
    )


async def _warm_up(api: Api, keys: TenantKeys, run_id: str) -> float:
    """A few unsubscribes, until the filter shows them: the processor has joined its group."""
    started = time.monotonic()
    work = mint(keys, api, 24, f"bench-{run_id}-warm")
    conn = HttpConnection(api.host, api.port)
    try:
        for item in work:
            status, body = await conn.request(item.request)
            if status != 200:
                raise BenchError(f"warm-up unsubscribe: HTTP {status}: {body[:300]!r}")
        refs = {item.ref for item in work}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            answer = await filter_call(conn, api, sorted(refs))
            done = {i["subject_ref"] for i in answer["suppressed"] if i["reason"] == "unsubscribed"}
            if done == refs:
                return round(time.monotonic() - started, 2)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()
    raise BenchError("warm-up unsubscribes not suppressed after 120 s")


# --- the report


def plot(results: dict[str, Any], path: Path) -> Path | None:
    """The backlog and lag curves of both unsubscribe scenarios (PNG); None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rate = results["parameters"]["rate"]
    scenarios = [
        (f"one-click POST /u/{{token}} at {rate:g}/s (API, relay, processor)", "unsubscribes"),
        (f"unsubscribed events onto the topic at {rate:g}/s (processor)", "topic_unsubscribes"),
    ]
    fig, axes = plt.subplots(3, 1, figsize=(10, 10))
    for axis, (title, key) in zip(axes[:2], scenarios, strict=True):
        figures = results[key]
        samples = figures["samples"]
        t = [x["t"] for x in samples]
        axis.plot(t, [x["backlog"] for x in samples], label="accepted, not yet suppressed")
        axis.plot(t, [x["outbox_unpublished"] for x in samples], label="outbox not yet published")
        lag = figures.get("processor_lag") or []
        axis.plot(
            [x["t"] for x in lag],
            [x["lag"] for x in lag],
            label="processor consumer lag (records behind the high-water mark)",
        )
        axis.set_title(title, fontsize=10)
        axis.set_ylabel("events")
        axis.legend(loc="upper left", fontsize=8)
    bottom = axes[2]
    for label, key in (
        ("one-click POST", "unsubscribes"),
        ("event on the topic", "topic_unsubscribes"),
    ):
        per = results[key]["per_second_p99_ms"]
        seconds = sorted(int(x) for x in per)
        bottom.plot(seconds, [per[str(x)] for x in seconds], label=f"p99, {label}")
    bottom.axhline(TARGETS["unsubscribe_p99_ms"], linestyle="--", color="red", label="target")
    bottom.set_yscale("log")
    bottom.set_xlabel("seconds since the first request (by the second it was scheduled in)")
    bottom.set_ylabel("→ suppressed in the list API, ms")
    bottom.legend(loc="upper left", fontsize=8)
    for axis in axes[:2]:
        axis.set_xlabel("seconds since the first request")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(results: dict[str, Any], level: int = 1) -> str:
    """The results as markdown; `level` is the heading level of the title."""
    u, p, m = results["unsubscribes"], results["parameters"], results["machine"]
    t = results["topic_unsubscribes"]
    best = max(results["filter"], key=lambda r: r["refs_per_s"], default=None)
    title = "#" * level
    target = TARGETS
    rows = [
        (
            f"one-click unsubscribe → suppressed in the list API, p99 (at {p['rate']:g}/s)",
            f"≤ {target['unsubscribe_p99_ms']:,.0f} ms",
            f"{_fmt(u['suppressed_ms']['p99'])} ms",
            u["suppressed_ms"]["p99"] is not None
            and u["suppressed_ms"]["p99"] <= target["unsubscribe_p99_ms"],
        ),
        (
            f"sustained unsubscribes/s for {p['duration']:g} s (answered 200)",
            f"≥ {target['rate']:,.0f}/s",
            f"{_fmt(u['accepted_rate_per_s'], 1)}/s",
            (u["accepted_rate_per_s"] or 0) >= 0.98 * target["rate"],
        ),
        ("loss (answered 200, never suppressed)", "0", str(u["lost"]), u["lost"] == 0),
        (
            f"the processor's part: event on the topic → suppressed, p99 (at {p['rate']:g}/s)",
            f"≤ {target['unsubscribe_p99_ms']:,.0f} ms",
            f"{_fmt(t['suppressed_ms']['p99'])} ms",
            t["suppressed_ms"]["p99"] is not None
            and t["suppressed_ms"]["p99"] <= target["unsubscribe_p99_ms"]
            and t["lost"] == 0,
        ),
        (
            "suppression filter"
            + (f" ({best['refs_per_call']:,} refs/call, c{best['concurrency']})" if best else ""),
            f"≥ {target['filter_refs_per_s']:,.0f} refs/s",
            f"{_fmt(best['refs_per_s'] if best else None)} refs/s",
            best is not None and best["refs_per_s"] >= target["filter_refs_per_s"],
        ),
    ]
    pg = m["postgresql"]
    lines = [
        f"{title} Marketing lists: unsubscribe → suppressed, and the filter, {results['when']}",
        "",
        f"{m['usable_cpus']} CPU cores ({m['cpu_model']}), Python {m['python']}, PostgreSQL "
        f"{pg['server_version']} (fsync={pg['fsync']}, synchronous_commit="
        f"{pg['synchronous_commit']}), Tansu (memory); API (1 process), relay, list processor "
        "(faust), broker, PostgreSQL and the load generator share these cores."
        + (" **Quick mode** (shorter run)." if p["quick"] else ""),
        "",
        "| target | goal | measured | |",
        "|---|---|---:|---|",
    ]
    for label, goal, measured, passed in rows:
        lines.append(f"| {label} | {goal} | {measured} | {'pass' if passed else '**FAIL**'} |")
    others = max(
        results[key]["cpu_percent_of_one_core"].get(cpu.OTHER, 0.0)
        for key in ("unsubscribes", "topic_unsubscribes")
    )
    if others > 10:
        lines += [
            "",
            f"**Warning: processes the benchmark did not start used up to {others:.0f} % of a "
            "core during the runs; these figures are lower than on a quiet machine.**",
        ]
    s, a = u["suppressed_ms"], u["suppressed_after_answer_ms"]
    lines += [
        "",
        f"Unsubscribes: {results['unsubscribe_path']}, one new subject each, open loop over "
        f"{p['connections']} connections; {u['requests']:,} sent in {u['window_s']} s "
        f"({_fmt(u['sent_rate_per_s'], 1)}/s), statuses {u['statuses']}. Suppressed = the "
        f"filter API answers `unsubscribed` (polled every {p['poll_interval'] * 1000:.0f} ms "
        f"for every pending subject; {u['polls']} polls, p50 {_fmt(u['poll_ms']['p50'], 1)} ms "
        "each).",
        "",
        "| measure | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        _row("scheduled send → suppressed (the target)", s),
        _row("POST answered → suppressed", a),
        _row("POST round trip", u["post_ms"]),
        _row("send delay behind schedule (load generator)", u["send_delay_ms"]),
        "",
        f"All were suppressed {u['drain_after_last_answer_s']} s after the last answer. "
        "Backlog and consumer lag over time: `results/preferences_lists_lag.png`.",
        "",
        _cpu_line(u["cpu_percent_of_one_core"], "during the one-click unsubscribes"),
        "",
        f"The processor's part alone: the same number of `preferences.unsubscribed` events "
        f"(all marketing, new subjects) put on `consentry.preferences.v1` at {p['rate']:g}/s "
        f"(acks=all, as the relay does), {_fmt(t['sent_rate_per_s'], 1)}/s sent, "
        f"{t['lost']} lost; suppressed = the same filter polling.",
        "",
        "| measure | n | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|",
        _row("scheduled → suppressed", t["suppressed_ms"]),
        _row("acknowledged by the broker → suppressed", t["suppressed_after_answer_ms"]),
        "",
        _cpu_line(t["cpu_percent_of_one_core"], "meanwhile"),
    ]
    seeding = results["seeding"]
    lines += [
        "",
        f"Processor on a backlog: {seeding['events']:,} events ({seeding['members']:,} subjects "
        f"given consent and subscribed) applied in {seeding['applied_s']} s from the first "
        f"produce: **{seeding['events_per_s']:,} events/s**.",
        "",
        "| filter: refs per call | concurrency | calls | refs/s | call p50 ms | p99 ms | wrong |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["filter"]:
        lines.append(
            f"| {run['refs_per_call']:,} | {run['concurrency']} | {run['calls']} | "
            f"{run['refs_per_s']:,} | {_fmt(run['call_ms']['p50'], 1)} | "
            f"{_fmt(run['call_ms']['p99'], 1)} | {run['wrong_answers']} |"
        )
    lines += [
        "",
        f"Filter calls: 90 % members of a {seeding['members']:,}-member list, 10 % unknown "
        "subjects; the first answers of each run checked in full against the known truth.",
    ]
    return "\n".join(lines) + "\n"


def _row(label: str, s: dict[str, Any]) -> str:
    return (
        f"| {label} | {s['n']:,} | {_fmt(s['p50'])} | {_fmt(s['p90'])} | {_fmt(s['p99'])} | "
        f"{_fmt(s['max'])} |"
    )


def _cpu_line(usage: dict[str, float], when: str) -> str:
    roles = [r for r in usage if r not in ("total", cpu.OTHER)]
    parts = ", ".join(
        f"{role} {usage[role]:.0f}" for role in sorted(roles, key=lambda r: -usage[r])
    )
    return f"CPU {when}, % of one core: {parts}; other processes {usage.get(cpu.OTHER, 0):.0f}."


async def run(opts: Options) -> dict[str, Any]:
    """Measure; write results/preferences_lists.{json,md} and the plot; return the results."""
    results = await measure(opts)
    opts.results_dir.mkdir(parents=True, exist_ok=True)
    png = plot(results, opts.results_dir / "preferences_lists_lag.png")
    results["plot"] = png.name if png else None
    (opts.results_dir / "preferences_lists.json").write_text(json.dumps(results, indent=2) + "\n")
    (opts.results_dir / "preferences_lists.md").write_text(markdown(results))
    progress(f"wrote {opts.results_dir / 'preferences_lists.md'} (and .json, .png)")
    return results


def parse(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line into `Options`."""
    d = Options()
    parser = argparse.ArgumentParser(
        prog="python -m bench.preferences_lists", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="short run: " + str(QUICK))
    parser.add_argument("--rate", type=float, default=d.rate, help="unsubscribes/s")
    parser.add_argument("--duration", type=float, default=None, help=f"s (default {d.duration:g})")
    parser.add_argument("--connections", type=int, default=d.connections)
    parser.add_argument("--poll-interval", type=float, default=d.poll_interval, help="s")
    parser.add_argument("--drain-timeout", type=float, default=d.drain_timeout, help="s")
    parser.add_argument("--list-size", type=int, default=None, help=f"default {d.list_size}")
    parser.add_argument("--filter-seconds", type=float, default=None)
    parser.add_argument("--results-dir", type=Path, default=d.results_dir)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    chosen: dict[str, Any] = dict(QUICK) if args.quick else {}
    for name in ("duration", "list_size", "filter_seconds"):
        if getattr(args, name) is not None:
            chosen[name] = getattr(args, name)
    opts = Options(
        rate=args.rate,
        connections=args.connections,
        poll_interval=args.poll_interval,
        drain_timeout=args.drain_timeout,
        quick=args.quick,
        results_dir=args.results_dir,
        keep_logs=args.keep_logs,
        **chosen,
    )
    if opts.rate <= 0 or opts.duration <= 0 or opts.list_size < 1 or opts.connections < 1:
        parser.error("--rate, --duration, --list-size and --connections must be > 0")
    if opts.list_size < max(opts.filter_sizes):
        sizes = tuple(s for s in opts.filter_sizes if s <= opts.list_size) or (opts.list_size,)
        opts = dataclasses.replace(opts, filter_sizes=sizes)
    return opts


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
