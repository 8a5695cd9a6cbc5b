"""The fault harness: a whole stack whose processes the test owns, a steady load, invariants.

Reusable API (the cases in this package and the network, PostgreSQL and clock cases use it):

    stack: FaultStack          # fixture `fault_stack` (conftest): every process a `Worker`
    load = await Load.prepare(stack)                 # subjects, list members, links
    async with load.running(rate=30):                # consent PUTs, unsubscribes, erasures
        await load.wait_accepted(20)                 # some traffic before the fault
        fault_at = time.monotonic()
        await stack.kill("consent", "relay")         # kill -9; the keeper restarts it
        await load.run_for(QUICK.after_fault)
    row = await recover(stack, load, "relay kill -9", fault_at)   # poll, then assert
    assert row.ok, row.failures

`FaultStack` runs every process of every service as a `Worker` (no supervisor: it would
stop the stack when one process dies). A keeper task restarts any worker that is not
running after `restart_delay` seconds, like an orchestrator's restart policy, unless the
test holds it (`hold()` / `release()`). The broker is the stack's own embedded Tansu unless
`CONSENTRY_KAFKA_BOOTSTRAP_SERVERS` is set and the case does not need to own it;
`lose_broker()` stops it and starts an empty one on the same port, `replay(since)` runs
every service's `replay --since`.

`check()` evaluates the invariants once; `recover()` polls them until they hold (the
recovery time is measured from the fault) or the deadline passes, and returns a `CaseResult`
that is also recorded for the session's table (`RESULTS`, printed by conftest):

(a) every accepted request's event is in the audit chain exactly once (consent decisions by
    event id through the ledger, unsubscribes and erasure requests by subject and type);
(b) each current consent state is the fold of the ledger (its latest version per purpose);
(c) list suppression matches: unsubscribed, withdrawn and erased members are suppressed
    with that reason, the others are still sendable;
(d) no event gave a webhook recipient two different webhook-ids or two acknowledged
    deliveries (the same webhook-id may come again: that is a retry); where the case asks
    (`every_erasure_told`: the process kills), every accepted erasure request reached it;
(e) the tenant's chain verifies (`/v1/audit/verify`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import json
import os
import random
import re
import secrets
import signal
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from uuid import UUID

import asyncpg
import httpx
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from consentry.consent.purposes.models import DEFAULT_PURPOSES
from consentry.devstack.broker import TANSU_CLIENT_ENV, EmbeddedBroker, TopicSpec, create_topics
from consentry.devstack.postgres import drop_database, with_user
from consentry.devstack.services import (
    DEV_API_KEY,
    DEV_TENANT_ID,
    ENV_PUBLIC_URL,
    SERVICES,
    Service,
    child_env,
    rights_env,
)
from consentry.devstack.spawning import free_port
from consentry.devstack.stack import DevStack, DevStackSettings
from consentry.devstack.testing_workers import Worker

__all__ = [
    "FULL",
    "QUICK",
    "RESULTS",
    "CaseResult",
    "FaultStack",
    "Load",
    "Timing",
    "Verdict",
    "check",
    "recover",
    "timing",
]

HOST = "127.0.0.1"
POLICY_VERSION = "2026-11"
TOPIC = "product-news"
RELAY_ACTIVE = "relay active"  # what a relay logs once it holds its outbox lock
CONSENT_PURPOSES = ("performance", "functionality", "targeting")
UNSUBSCRIBED = "consentry.preferences.unsubscribed.v1"
ERASURE_REQUESTED = "consentry.rights.erasure_requested.v1"
ERASURE_NOTICE = "erasure.requested"  # the `type` of a webhook notice (docs/webhooks.md)
TOPIC_PARTITIONS = 6


@dataclasses.dataclass(frozen=True)
class Timing:
    """How long a case drives load; the quick form runs in `make test`, the full one in
    `make test-faults` (`CONSENTRY_FAULTS_FULL=1`)."""

    rate: float  # requests per second, all kinds together
    before_fault: float  # seconds of load before the fault
    after_fault: float  # seconds of load after it
    recovery: float  # deadline for the invariants to hold again
    list_members: int  # pre-subscribed list members per case
    subjects: int  # consent subjects per case


QUICK = Timing(rate=25, before_fault=2.0, after_fault=3.0, recovery=90, list_members=8, subjects=30)
FULL = Timing(
    rate=40, before_fault=10.0, after_fault=20.0, recovery=180, list_members=30, subjects=120
)


def timing() -> Timing:
    """The form this run uses."""
    return FULL if os.environ.get("CONSENTRY_FAULTS_FULL") == "1" else QUICK


# --- the stack ---------------------------------------------------------------------------


class FaultStack:
    """Databases, topics and migrations from `DevStack`; every process a `Worker`."""

    def __init__(
        self, pg_server_dsn: str, log_dir: Path, *, own_broker: bool = False, label: str = "f"
    ) -> None:
        self.pg_server_dsn = pg_server_dsn
        self.log_dir = log_dir
        self.restart_delay = 0.5
        configured = os.environ.get("CONSENTRY_KAFKA_BOOTSTRAP_SERVERS")
        self._configured_broker = None if own_broker else configured
        self._label = label
        self._broker: EmbeddedBroker | None = None
        self._bootstrap = ""
        self._exit = contextlib.AsyncExitStack()
        self._names = {
            service.name: f"ct_{secrets.token_hex(4)}_{label}_{service.name}"
            for service in SERVICES
        }
        self._ports = {service.name: free_port(HOST) for service in SERVICES if service.http}
        self._dev: DevStack | None = None
        self.workers: dict[tuple[str, str], Worker] = {}
        self._held: set[tuple[str, str]] = set()
        self._keeper: asyncio.Task[None] | None = None
        self.restarts: Counter[tuple[str, str]] = Counter()
        self.started_at = datetime.now(UTC)

    @property
    def bootstrap(self) -> str:
        return self._bootstrap

    @property
    def owns_broker(self) -> bool:
        return self._broker is not None

    def api_url(self, service: str) -> str:
        return f"http://{HOST}:{self._ports[service]}"

    def database_dsn(self, service: str) -> str:
        """The service's database as its owner (the invariant checks read it)."""
        assert self._dev is not None
        return self._dev.database_dsn(service)

    def worker(self, service: str, process: str) -> Worker:
        return self.workers[(service, process)]

    async def __aenter__(self) -> Self:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exit.aclose()

    async def _start(self) -> None:
        if self._configured_broker:
            self._bootstrap = self._configured_broker
        else:
            self._broker = EmbeddedBroker()
            self._bootstrap = self._broker.start()
            self._exit.callback(lambda: self._broker.stop() if self._broker else None)
        settings = DevStackSettings.model_validate(
            {"database_url": self.pg_server_dsn, "kafka_bootstrap_servers": self._bootstrap}
        )
        dev = DevStack(
            settings,
            start_processes=False,
            app_roles=True,  # the processes log in with their restricted roles
            database_names=self._names,
            log_dir=self.log_dir,
            out=io.StringIO(),  # the migrations' output: only failures matter (raised)
        )
        self._exit.push_async_callback(self._drop_databases)
        self._dev = await self._exit.enter_async_context(dev)
        for service in SERVICES:
            for process in service.processes:
                self.workers[(service.name, process.name)] = self._worker(service, process.name)
        self._exit.push_async_callback(self._stop_workers)
        await asyncio.gather(*(w.start(wait=False) for w in self.workers.values()))
        await asyncio.gather(*(w.wait_ready() for w in self.workers.values()))
        self._keeper = asyncio.create_task(self._keep())

    def _worker(self, service: Service, process: str) -> Worker:
        dsn = self.database_dsn(service.name)
        if service.app_role is not None:
            dsn = with_user(dsn, service.app_role.login)
        http = service.http is not None and service.http.name == process
        env = child_env(
            database_dsn=dsn,
            bootstrap=self._bootstrap,
            http_host=HOST,
            http_port=self._ports[service.name] if http else None,
        )
        if not self._configured_broker:
            env |= TANSU_CLIENT_ENV
        env |= rights_env(SERVICES)
        if service.name in self._ports:
            env[ENV_PUBLIC_URL] = self.api_url(service.name)
        env |= {
            "CONSENTRY_RELAY_BATCH_SIZE": "50",
            "CONSENTRY_AUDIT_CHECKPOINT_INTERVAL_SECONDS": "0.5",
            # Twenty-odd processes on one server: small pools keep the stack well inside a
            # stock PostgreSQL's max_connections (100; CI's second pass runs on one).
            "CONSENTRY_DATABASE_POOL_MIN": "1",
            "CONSENTRY_DATABASE_POOL_MAX": "5",
        }
        ready_url = f"{self.api_url(service.name)}/healthz" if http else None
        ready_line = RELAY_ACTIVE if process == "relay" else None
        return Worker.module(
            service.name,
            process,
            env=env,
            log_dir=self.log_dir,
            ready_line=ready_line,
            ready_url=ready_url,
        )

    async def _keep(self) -> None:
        """Restart what is not running (a killed worker, one that crashed on a fault)."""
        down_since: dict[tuple[str, str], float] = {}
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for key, worker in self.workers.items():
                if worker.running or key in self._held:
                    down_since.pop(key, None)
                    continue
                since = down_since.setdefault(key, now)
                if now - since >= self.restart_delay:
                    down_since.pop(key)
                    self.restarts[key] += 1
                    await worker.start(wait=False)

    async def _stop_workers(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        await asyncio.gather(*(w.kill(signal.SIGTERM) for w in self.workers.values()))

    async def _drop_databases(self) -> None:
        for name in self._names.values():
            await drop_database(self.pg_server_dsn, name)

    async def kill(self, service: str, process: str, sig: int = signal.SIGKILL) -> None:
        """Kill a process (-9 by default); the keeper starts it again."""
        await self.worker(service, process).kill(sig)

    def hold(self, service: str, process: str) -> None:
        """Keep the keeper from restarting this process (until `release`)."""
        self._held.add((service, process))

    def release(self, service: str, process: str) -> None:
        self._held.discard((service, process))

    async def wait_running(self, seconds: float = 120) -> None:
        """Wait until every worker runs again and the HTTP APIs answer."""
        async with asyncio.timeout(seconds):
            while not all(w.running for w in self.workers.values()):
                await asyncio.sleep(0.1)
            await asyncio.gather(
                *(w.wait_ready() for w in self.workers.values() if w.ready_url is not None)
            )

    async def lose_broker(self) -> None:
        """Stop the broker and start an empty one on the same port (all data lost)."""
        if self._broker is None:
            raise RuntimeError("only a broker the stack owns can be restarted")
        address = await asyncio.to_thread(self._broker.lose_everything)
        assert address == self._bootstrap, (address, self._bootstrap)
        await self.create_topics()

    async def create_topics(self) -> None:
        names = dict.fromkeys(topic for service in SERVICES for topic in service.topics)
        await create_topics(
            self._bootstrap, [TopicSpec(n, partitions=TOPIC_PARTITIONS) for n in names]
        )

    async def replay(self, since: datetime) -> dict[str, str]:
        """Every service's `replay --since` (as the database owner, like `migrate`)."""
        outputs: dict[str, str] = {}
        moment = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S%z")
        for service in SERVICES:
            env = {
                **os.environ,
                **child_env(
                    database_dsn=self.database_dsn(service.name),
                    bootstrap=self._bootstrap,
                    http_host="",
                    http_port=None,
                ),
            }
            process = await asyncio.create_subprocess_exec(
                *service.migrate[:-1],
                "replay",
                "--since",
                moment,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await process.communicate()
            text = out.decode(errors="replace")
            if process.returncode != 0:
                raise RuntimeError(f"{service.name} replay failed ({process.returncode}): {text}")
            outputs[service.name] = text.strip()
        return outputs

    def client(self, service: str, *, key: bool = True) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {DEV_API_KEY}"} if key else {}
        return httpx.AsyncClient(base_url=self.api_url(service), headers=headers, timeout=30)

    async def prepare_tenant(self) -> None:
        """The dev tenant's policy, the marketing topic and a webhook recipient's readiness."""
        async with self.client("consent") as consent:
            published = await consent.post(
                "/v1/policy-versions",
                json={
                    "version": POLICY_VERSION,
                    "url": "https://example.com/privacy/2026-11",
                    "effective_on": "2026-11-01",
                    "purposes": [
                        {"purpose": p, "notice": f"What we do for {p}."} for p in DEFAULT_PURPOSES
                    ],
                },
            )
            assert published.status_code in (201, 409), published.text
        topic = {"category": "marketing", "channels": ["email"], "labels": {"en": "News"}}
        async with self.client("preferences") as preferences, asyncio.timeout(120):
            while (
                response := await preferences.put(f"/v1/topics/{TOPIC}", json=topic)
            ).status_code == 503:
                await asyncio.sleep(0.2)  # the directory has not brought the tenant yet
            assert response.status_code in (200, 201), response.text


# --- webhook receivers -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Delivery:
    webhook_id: str
    notice: dict[str, Any]


class WebhookSink:
    """A recipient's endpoint on loopback: records every notice, acknowledges it signed."""

    def __init__(self) -> None:
        self.server = HTTPServer(host=HOST, port=0, threaded=True)
        self.secret = ""
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        self.server.start()
        self.server.expect_request("/hook", method="POST").respond_with_handler(self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def url(self) -> str:
        return str(self.server.url_for("/hook"))

    def _handle(self, request: Request) -> Response:
        message_id = request.headers.get("webhook-id", "")
        try:
            notice = json.loads(request.get_data())
        except ValueError:
            notice = {}
        with self._lock:
            self.deliveries.append(Delivery(message_id, notice))
        body = json.dumps({"acknowledged": True})
        now = datetime.now(UTC)
        return Response(
            body,
            status=200,
            content_type="application/json",
            headers={
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": Webhook(self.secret).sign(message_id, now, body),
            },
        )

    async def register(self, stack: FaultStack) -> None:
        body = {
            "name": f"sink-{secrets.token_hex(3)}",
            "role": "payment",
            "region": "SE",
            "webhook_url": self.url,
            "purposes": [],
            "data_categories": ["contact details"],
        }
        async with stack.client("subprocessors") as client, asyncio.timeout(120):
            while (response := await client.post("/v1/recipients", json=body)).status_code == 503:
                await asyncio.sleep(0.2)
        assert response.status_code == 201, response.text
        self.secret = response.json()["signing_secret"]


# --- the load ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Accepted:
    """A request the API answered 2xx: its effects must all be there after recovery."""

    kind: str  # consent | unsubscribe | withdraw | erasure
    subject: str
    ref: str
    version: int = 0  # consent, withdraw: the subject's version after the decision
    purpose: str = ""
    status: str = ""
    request_id: str = ""  # erasure


@dataclasses.dataclass
class Member:
    """A list member prepared for the load: subscribed, with a one-click link."""

    subject: str
    ref: str
    unsubscribe_url: str
    fate: str = "sendable"  # what the load did to it: unsubscribed | consent-withdrawn | erased


class Load:
    """A steady open-loop mix of consent decisions, one-click unsubscribes, withdrawals of
    marketing e-mail consent and erasure requests; records what the APIs accepted."""

    def __init__(
        self,
        stack: FaultStack,
        subjects: dict[str, str],
        erasable: dict[str, str],
        members: list[Member],
    ) -> None:
        self.stack = stack
        self.subjects = subjects  # subject -> ref: consent decisions (never erased: erasure
        # deletes the ledger rows that check the decisions)
        self.erasable = erasable  # subject -> ref: one decision each, then an erasure
        self.members = members
        self.accepted: list[Accepted] = []
        self.sent = 0
        self.failed: Counter[str] = Counter()
        self._rng = random.Random(secrets.randbits(32))
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._clients: dict[str, httpx.AsyncClient] = {}

    @classmethod
    async def prepare(cls, stack: FaultStack, form: Timing | None = None) -> Load:
        """Subjects with a first decision, list members subscribed with a one-click link."""
        form = form or timing()
        tag = secrets.token_hex(3)
        async with stack.client("consent") as consent, stack.client("preferences") as prefs:
            sem = asyncio.Semaphore(8)

            async def subject(n: int) -> tuple[str, str]:
                name = f"fault-{tag}-s{n}"
                async with sem:
                    await _decide(consent, name, "performance", "given")
                    return name, await _ref(consent, name)

            async def member(n: int) -> Member:
                name = f"fault-{tag}-m{n}"
                async with sem:
                    await _decide(consent, name, "marketing-email", "given")
                ref = await _subscribe(prefs, name)
                async with sem:
                    links = await prefs.post(
                        f"/v1/subjects/{name}/unsubscribe-links", json={"topic": TOPIC}
                    )
                assert links.status_code == 200, links.text
                url = re.fullmatch(r"<(.+)>", links.json()["headers"]["List-Unsubscribe"])
                assert url is not None
                return Member(name, ref, url[1])

            subjects = dict(await asyncio.gather(*(subject(n) for n in range(form.subjects))))
            erasable = dict(
                await asyncio.gather(*(subject(n) for n in range(1000, 1000 + form.subjects // 3)))
            )
            members = list(await asyncio.gather(*(member(n) for n in range(form.list_members))))
        return cls(stack, subjects, erasable, members)

    @contextlib.asynccontextmanager
    async def running(self, rate: float | None = None) -> AsyncIterator[Self]:
        """Drive the load while the block runs; wait for what is in flight after it."""
        rate = rate or timing().rate
        self._clients = {
            "consent": self.stack.client("consent"),
            "preferences": self.stack.client("preferences"),
            "anonymous": httpx.AsyncClient(timeout=30),
        }
        for client in self._clients.values():
            client.timeout = httpx.Timeout(10)
        self._task = asyncio.create_task(self._drive(rate))
        try:
            yield self
        finally:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            if self._inflight:
                await asyncio.wait(self._inflight)
            for client in self._clients.values():
                await client.aclose()

    async def run_for(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # the load runs meanwhile: time is the measure here

    async def wait_accepted(self, count: int, seconds: float = 60) -> None:
        """Wait until `count` more requests were accepted than when called."""
        target = len(self.accepted) + count
        async with asyncio.timeout(seconds):
            while len(self.accepted) < target:
                await asyncio.sleep(0.05)

    async def _drive(self, rate: float) -> None:
        interval = 1.0 / rate
        next_at = time.monotonic()
        while True:
            next_at += interval
            if len(self._inflight) < 64:  # a dead API must not pile up thousands of tasks
                task = asyncio.create_task(self._one())
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def _one(self) -> None:
        roll = self._rng.random()
        open_members = [m for m in self.members if m.fate == "sendable"]
        if roll < 0.10 and open_members:
            await self._unsubscribe(self._rng.choice(open_members))
        elif roll < 0.15 and open_members:
            await self.withdraw(self._rng.choice(open_members))
        elif roll < 0.20 and open_members and self._rng.random() < 0.5:
            await self._erase_member(self._rng.choice(open_members))
        elif roll < 0.25 and self.erasable:
            subject = self._rng.choice(sorted(self.erasable))
            await self._erase(subject, self.erasable.pop(subject))
        elif self.subjects:
            subject = self._rng.choice(sorted(self.subjects))
            purpose = self._rng.choice(CONSENT_PURPOSES)
            status = self._rng.choice(("given", "withdrawn"))
            await self._consent(subject, purpose, status)

    async def _send(
        self, kind: str, request: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response | None:
        self.sent += 1
        try:
            response = await request()
        except httpx.HTTPError as error:
            self.failed[f"{kind}: {type(error).__name__}"] += 1
            return None
        if not response.is_success:
            self.failed[f"{kind}: {response.status_code}"] += 1
            return None
        return response

    async def _consent(self, subject: str, purpose: str, status: str) -> None:
        client = self._clients["consent"]
        response = await self._send(
            "consent",
            lambda: client.put(
                f"/v1/subjects/{subject}/consents/{purpose}",
                json={"status": status, "policy_version": POLICY_VERSION},
            ),
        )
        if response is not None:
            version = int(response.json()["subject_version"])
            ref = self.subjects[subject]
            self.accepted.append(Accepted("consent", subject, ref, version, purpose, status))

    async def withdraw(self, member: Member) -> None:
        member.fate = "consent-withdrawn"  # claimed at once: no second action on it
        client = self._clients["consent"]
        response = await self._send(
            "withdraw",
            lambda: client.put(
                f"/v1/subjects/{member.subject}/consents/marketing-email",
                json={"status": "withdrawn", "policy_version": POLICY_VERSION},
            ),
        )
        if response is None:
            member.fate = "unknown"  # it may or may not have been recorded
            return
        version = int(response.json()["subject_version"])
        self.accepted.append(
            Accepted(
                "withdraw", member.subject, member.ref, version, "marketing-email", "withdrawn"
            )
        )

    async def _unsubscribe(self, member: Member) -> None:
        member.fate = "unsubscribed"
        client = self._clients["anonymous"]
        response = await self._send(
            "unsubscribe",
            lambda: client.post(
                member.unsubscribe_url,
                content=b"List-Unsubscribe=One-Click",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
        )
        if response is None:
            member.fate = "unknown"
            return
        self.accepted.append(Accepted("unsubscribe", member.subject, member.ref))

    async def _erase_member(self, member: Member) -> None:
        member.fate = "erased"
        if not await self._erase(member.subject, member.ref):
            member.fate = "unknown"

    async def _erase(self, subject: str, ref: str) -> bool:
        client = self._clients["consent"]
        response = await self._send(
            "erasure",
            lambda: client.post(
                "/v1/rights-requests",
                json={"kind": "erasure", "requester": "tenant", "subject_ids": [subject]},
            ),
        )
        if response is None:
            return False
        request_id = str(response.json()["id"])
        self.accepted.append(Accepted("erasure", subject, ref, request_id=request_id))
        return True


async def _decide(api: httpx.AsyncClient, subject: str, purpose: str, status: str) -> None:
    response = await api.put(
        f"/v1/subjects/{subject}/consents/{purpose}",
        json={"status": status, "policy_version": POLICY_VERSION},
    )
    assert response.status_code == 200, response.text


async def _ref(api: httpx.AsyncClient, subject: str) -> str:
    response = await api.get(f"/v1/subjects/{subject}/consents")
    assert response.status_code == 200, response.text
    return str(response.json()["subject_ref"])


async def _subscribe(api: httpx.AsyncClient, subject: str) -> str:
    """Subscribe once the marketing consent has reached the preferences service."""
    change = {"changes": [{"topic": TOPIC, "channel": "email", "subscribed": True}]}
    async with asyncio.timeout(120):
        while (
            response := await api.patch(f"/v1/subjects/{subject}/preferences", json=change)
        ).status_code in (409, 503):
            await asyncio.sleep(0.1)  # the consent follower has not seen the consent yet
    assert response.status_code == 200, response.text
    return str(response.json()["subject_ref"])


# --- invariants --------------------------------------------------------------------------


@dataclasses.dataclass
class Verdict:
    """One evaluation of the invariants."""

    accepted: int = 0
    in_audit: int = 0
    lost: int = 0
    duplicated: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclasses.dataclass
class CaseResult:
    """A row of the figures table."""

    case: str
    sent: int
    accepted: int
    in_audit: int
    lost: int
    duplicated: int
    recovery_s: float | None  # fault injected -> invariants hold; None: they never did
    failures: list[str]
    restarts: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and self.recovery_s is not None


RESULTS: list[CaseResult] = []


async def check(
    stack: FaultStack,
    load: Load,
    sink: WebhookSink | None = None,
    *,
    every_erasure_told: bool = False,
) -> Verdict:
    """Evaluate every invariant once (no waiting): see the module docstring. With
    `every_erasure_told` (the sink was a recipient before the load began), (d) also needs a
    webhook at the sink for every accepted erasure request."""
    verdict = Verdict(accepted=len(load.accepted))
    tenant = UUID(DEV_TENANT_ID)
    consent = await asyncpg.connect(stack.database_dsn("consent"))
    try:
        async with consent.transaction():
            await consent.execute(f"SET LOCAL consentry.tenant_id = '{tenant}'")
            ledger = {
                (row["subject_ref"], row["subject_version"]): row
                for row in await consent.fetch(
                    "SELECT event_id, subject_ref, subject_version, purpose, status"
                    " FROM consent_ledger WHERE tenant_id = $1",
                    tenant,
                )
            }
            unfolded = await consent.fetch(FOLD_MISMATCHES, tenant)
    finally:
        await consent.close()
    audit = await asyncpg.connect(stack.database_dsn("audit"))
    try:
        entries = await audit.fetch(
            "SELECT event_id, event_type, subject_ref FROM audit_entries WHERE tenant_id = $1",
            tenant,
        )
    finally:
        await audit.close()
    by_event = Counter(str(row["event_id"]) for row in entries)
    by_subject = Counter((row["subject_ref"], row["event_type"]) for row in entries)

    missing: list[str] = []
    for item in load.accepted:
        if item.kind in ("consent", "withdraw"):
            row = ledger.get((item.ref, item.version))
            if row is None or row["purpose"] != item.purpose or row["status"] != item.status:
                missing.append(f"{item.kind} {item.ref[:12]} v{item.version}: not in the ledger")
                verdict.lost += 1
                continue
            count = by_event[str(row["event_id"])]
            what = f"{item.kind} event {row['event_id']}"
        elif item.kind == "unsubscribe":
            count = by_subject[(item.ref, UNSUBSCRIBED)]
            what = f"unsubscribe of {item.ref[:12]}"
        else:
            count = by_subject[(item.ref, ERASURE_REQUESTED)]
            what = f"erasure request {item.request_id}"
        if count == 0:
            verdict.lost += 1
            missing.append(f"{what}: not in the audit chain")
        elif count > 1:
            verdict.duplicated += 1
            verdict.in_audit += 1
            missing.append(f"{what}: {count} times in the audit chain")
        else:
            verdict.in_audit += 1
    if missing:
        verdict.failures.append(f"(a) {len(missing)} accepted request(s): {missing[:5]}")
    if unfolded:
        shown = [dict(row) for row in unfolded[:5]]
        verdict.failures.append(f"(b) {len(unfolded)} state(s) differ from the ledger: {shown}")

    verdict.failures += await _check_lists(stack, load)
    if sink is not None:
        verdict.failures += _check_webhooks(sink, load if every_erasure_told else None)
    async with stack.client("audit") as audit_api:
        report = (await audit_api.get("/v1/audit/verify")).json()
    if report.get("ok") is not True:
        verdict.failures.append(f"(e) the chain does not verify: {report}")
    return verdict


# The current state of each (subject, purpose) against the ledger's latest row for it.
FOLD_MISMATCHES = """
WITH latest AS (
    SELECT DISTINCT ON (subject_ref, purpose) subject_ref, purpose, status, event_id
    FROM consent_ledger WHERE tenant_id = $1
    ORDER BY subject_ref, purpose, subject_version DESC
)
SELECT l.subject_ref, l.purpose, l.status AS ledger_status, c.status AS state_status,
       l.event_id AS ledger_event, c.event_id AS state_event
FROM latest l
FULL JOIN (SELECT * FROM consents WHERE tenant_id = $1) c USING (subject_ref, purpose)
WHERE c.event_id IS DISTINCT FROM l.event_id OR c.status IS DISTINCT FROM l.status
"""


async def _check_lists(stack: FaultStack, load: Load) -> list[str]:
    """(c): each member's verdict is what the load did to it (unknown fates are skipped:
    a request that failed in flight may or may not have been applied)."""
    members = [m for m in load.members if m.fate != "unknown"]
    if not members:
        return []
    async with stack.client("preferences") as prefs:
        response = await prefs.post(
            f"/v1/lists/{TOPIC}/filter",
            json={"channel": "email", "subject_refs": [m.ref for m in members]},
        )
    if response.status_code != 200:
        return [f"(c) the list filter answered {response.status_code}: {response.text[:200]}"]
    body = response.json()
    verdicts = dict.fromkeys(body["sendable"], "sendable")
    verdicts |= {s["subject_ref"]: s["reason"] for s in body["suppressed"]}
    wrong = [
        f"{m.ref[:12]}: {verdicts.get(m.ref)} (expected {m.fate})"
        for m in members
        if verdicts.get(m.ref) != m.fate
    ]
    return [f"(c) {len(wrong)} list member(s): {wrong[:5]}"] if wrong else []


def _check_webhooks(sink: WebhookSink, told_of: Load | None = None) -> list[str]:
    """(d): one webhook-id per notice (type, request or subject, recipient); with `told_of`,
    also a notice for every erasure request that load had accepted."""
    ids: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for delivery in list(sink.deliveries):
        notice = delivery.notice
        key = tuple(
            str(notice.get(field, ""))
            for field in ("type", "request_id", "subject_ref", "recipient_id", "purposes")
        )
        ids[key].add(delivery.webhook_id)
    failures: list[str] = []
    doubled = {key: sorted(found) for key, found in ids.items() if len(found) > 1}
    if doubled:
        failures.append(
            f"(d) {len(doubled)} notice(s) with several webhook-ids: {list(doubled.items())[:3]}"
        )
    if told_of is not None:
        told = {key[1] for key in ids if key[0] == ERASURE_NOTICE}
        untold = [
            item.request_id
            for item in told_of.accepted
            if item.kind == "erasure" and item.request_id not in told
        ]
        if untold:
            failures.append(f"(d) {len(untold)} accepted erasure(s) never notified: {untold[:3]}")
    return failures


async def recover(
    stack: FaultStack,
    load: Load,
    case: str,
    fault_at: float,
    *,
    sink: WebhookSink | None = None,
    every_erasure_told: bool = False,
    seconds: float | None = None,
    record: bool = True,
) -> CaseResult:
    """Poll the invariants until they hold or the deadline passes; record the row (for the
    table) unless `record` is false (a settling step inside a case)."""
    seconds = seconds if seconds is not None else timing().recovery
    deadline = time.monotonic() + seconds
    verdict = Verdict()
    recovered: float | None = None
    while True:
        with contextlib.suppress(OSError, asyncpg.PostgresError, httpx.HTTPError, ValueError):
            verdict = await check(stack, load, sink, every_erasure_told=every_erasure_told)
            if verdict.ok:
                recovered = time.monotonic() - fault_at
                break
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    if recovered is None and not verdict.failures:
        verdict.failures.append("the invariants could not be evaluated before the deadline")
    row = CaseResult(
        case=case,
        sent=load.sent,
        accepted=len(load.accepted),
        in_audit=verdict.in_audit,
        lost=verdict.lost,
        duplicated=verdict.duplicated,
        recovery_s=recovered,
        failures=verdict.failures,
        restarts=sum(stack.restarts.values()),
    )
    if record:
        RESULTS.append(row)
    return row
