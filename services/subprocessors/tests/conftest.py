"""Fixtures for the subprocessors service: a migrated database, the API, the notifier (faust)
in this process, and local webhook receivers on loopback.

The API and the notifier log in as `consentry_subprocessors_app`, a non-superuser member of
the group role `consentry_subprocessors_rw` (migration 0001), as in the dev stack, so
row-level security is active. `db` is the owner's (superuser's) connection: it sees every
row. Each test uses a tenant of its own (the broker's topics are shared by the session),
provisioned as the directory follower would (`tenants`, migration 0002).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import asyncpg
import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from pytest_httpserver import HTTPServer
from standardwebhooks import Webhook
from werkzeug import Request, Response

from consentry.devstack.broker import TopicSpec, create_topics
from consentry.devstack.postgres import ensure_login_role, with_user
from consentry.eventing import catalogue, topics
from consentry.eventing.envelope import Event, KafkaRecord, ReceivedEvent, encode, utcnow
from consentry.eventing.migrations import migrate_dsn
from consentry.eventing.testing import consent_event, outbox_events
from consentry.httpapi.keys import hash_secret
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors import signing
from consentry.subprocessors.__main__ import migrations
from consentry.subprocessors.app import create_app
from consentry.subprocessors.notifier.sender import run_sender
from consentry.subprocessors.notifier.worker import CONSUMER, run_notifier
from consentry.subprocessors.settings import ApiSettings, NotifierSettings

API_KEY = "test-key-0123456789abcdefghij"
APP_ROLE = "consentry_subprocessors_app"
GROUP_ROLE = "consentry_subprocessors_rw"
PUBLIC_URL = "http://subprocessors.test"
DLQ = topics.dead_letter_topic(CONSUMER)
T = TypeVar("T")


@pytest_asyncio.fixture
async def subprocessors_db(fresh_database: Callable[[str], Awaitable[str]]) -> str:
    """DSN of a fresh, migrated subprocessors database, as its owner (a superuser)."""
    dsn = await fresh_database("subprocessors")
    await migrate_dsn(dsn, migrations())
    return dsn


@pytest_asyncio.fixture
async def app_dsn(subprocessors_db: str) -> str:
    """DSN of the database as the application's role: RLS applies to it."""
    await ensure_login_role(subprocessors_db, APP_ROLE, GROUP_ROLE)
    return with_user(subprocessors_db, APP_ROLE)


@pytest_asyncio.fixture
async def db(subprocessors_db: str) -> AsyncIterator[asyncpg.Connection]:
    """The owner's connection (a superuser: sees every tenant's rows)."""
    conn = await asyncpg.connect(subprocessors_db)
    yield conn
    await conn.close()


async def provision_tenant(
    db: asyncpg.Connection, tenant_id: uuid.UUID, name: str = "Test tenant"
) -> None:
    """Write the tenant's row as the directory follower does (a repeat changes nothing)."""
    await db.execute(
        "INSERT INTO tenants (id, name, provisioned_at) VALUES ($1, $2, now())"
        " ON CONFLICT (id) DO NOTHING",
        tenant_id,
        name,
    )


@pytest_asyncio.fixture
async def tenant(db: asyncpg.Connection) -> uuid.UUID:
    """This test's tenant (the dev key's), provisioned."""
    tenant_id = uuid.uuid4()
    await provision_tenant(db, tenant_id)
    return tenant_id


@pytest.fixture
def api_settings(app_dsn: str, tenant: uuid.UUID) -> ApiSettings:
    return ApiSettings(
        database_url=app_dsn,
        environment="test",
        dev_api_key=API_KEY,
        dev_tenant_id=tenant,
        api_key_cache_seconds=0,
    )


@pytest_asyncio.fixture
async def subprocessors_app(api_settings: ApiSettings) -> AsyncIterator[FastAPI]:
    """The API, started (lifespan entered)."""
    app = create_app(api_settings)
    async with app.router.lifespan_context(app):
        yield app


def _client(app: FastAPI, key: str | None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL, headers=headers
    )


@pytest_asyncio.fixture
async def client(subprocessors_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client presenting the dev key (every scope, this test's tenant)."""
    async with _client(subprocessors_app, API_KEY) as client:
        yield client


@pytest_asyncio.fixture
async def public(subprocessors_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client without an API key (the recipients' acknowledgement callback)."""
    async with _client(subprocessors_app, None) as client:
        yield client


async def issue_key(db: asyncpg.Connection, tenant_id: uuid.UUID, scopes: Iterable[str]) -> str:
    """Insert an API key (and its tenant) as the directory follower does; return the key to
    present."""
    await provision_tenant(db, tenant_id)
    key_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(16))
    secret = secrets.token_urlsafe(32)[:43].ljust(43, "A")
    await db.execute(
        "INSERT INTO api_keys (id, tenant_id, scopes, secret_hash, issued_at)"
        " VALUES ($1, $2, $3, $4, now())",
        key_id,
        tenant_id,
        sorted(scopes),
        hash_secret(secret),
    )
    return f"csk_{key_id}_{secret}"


KeyedClient = Callable[[uuid.UUID, Iterable[str]], Awaitable[httpx.AsyncClient]]


@pytest_asyncio.fixture
async def keyed_client(
    subprocessors_app: FastAPI, db: asyncpg.Connection
) -> AsyncIterator[KeyedClient]:
    """Factory: a client with a database API key of `tenant` holding `scopes`."""
    opened: list[httpx.AsyncClient] = []

    async def make(tenant_id: uuid.UUID, scopes: Iterable[str]) -> httpx.AsyncClient:
        client = _client(subprocessors_app, await issue_key(db, tenant_id, scopes))
        opened.append(client)
        return client

    yield make
    for client in opened:
        await client.aclose()


def recipient_body(name: str, url: str, **fields: Any) -> dict[str, Any]:
    """A valid registration."""
    return {
        "name": name,
        "role": "payment",
        "region": "SE",
        "webhook_url": url,
        "purposes": [],
        "data_categories": ["contact details"],
        **fields,
    }


async def register(client: httpx.AsyncClient, name: str, url: str, **fields: Any) -> dict[str, Any]:
    """Register a recipient through the API; its answer (with the signing secret)."""
    response = await client.post("/v1/recipients", json=recipient_body(name, url, **fields))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


# --- Local webhook receivers ------------------------------------------------------------

Behaviour = Callable[[int, str, bytes], Response]


@dataclass
class Received:
    """One request a receiver got, and whether its signature verified."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    at: datetime

    @property
    def json(self) -> dict[str, Any]:
        """The parsed body."""
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """One recipient's endpoint: verifies each notice with its secret (standardwebhooks)."""

    name: str
    url: str
    secret: str = ""
    behaviour: Behaviour | None = None
    received: list[Received] = field(default_factory=list)

    @property
    def verified(self) -> list[Received]:
        """Requests whose signature verified."""
        return [request for request in self.received if request.verified]


def ok(status: int = 204) -> Behaviour:
    """Answer `status` with an empty body (delivered; acknowledge by callback)."""
    return lambda _n, _id, _body: Response(status=status)


def signed_ack(secret: str, status: int = 200, padding: int = 0) -> Behaviour:
    """Answer with a signed `{"acknowledged": true}` (acknowledged at once); `padding`
    spaces after the JSON, still valid and signed."""

    def answer(_n: int, message_id: str, _body: bytes) -> Response:
        body = json.dumps({"acknowledged": True}) + " " * padding
        signature = Webhook(secret).sign(message_id, datetime.now(UTC), body)
        return Response(
            body,
            status=status,
            content_type="application/json",
            headers={
                "webhook-id": message_id,
                "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
                "webhook-signature": signature,
            },
        )

    return answer


def fail_first(times: int, then: Behaviour, status: int = 503) -> Behaviour:
    """Answer `status` to the first `times` requests, then behave like `then`."""
    return lambda n, message_id, body: (
        Response(status=status) if n <= times else then(n, message_id, body)
    )


class Receivers:
    """Webhook receivers on one loopback HTTP server (one path per recipient)."""

    def __init__(self, server: HTTPServer) -> None:
        self._server = server
        self._lock = threading.Lock()
        self.by_name: dict[str, Receiver] = {}

    def add(self, name: str) -> Receiver:
        """A new receiver at `/hooks/<name>`; its secret and behaviour are set later."""
        receiver = Receiver(name, self._server.url_for(f"/hooks/{name}"))
        self.by_name[name] = receiver

        def handle(request: Request) -> Response:
            body = request.get_data()
            headers = {key.lower(): value for key, value in request.headers.items()}
            verified = False
            if receiver.secret:
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified = True
                except Exception:
                    verified = False
            with self._lock:
                receiver.received.append(
                    Received(request.path, headers, body, verified, datetime.now(UTC))
                )
                count = len(receiver.received)
            behaviour = receiver.behaviour or ok()
            return behaviour(count, headers.get("webhook-id", ""), body)

        self._server.expect_request(f"/hooks/{name}", method="POST").respond_with_handler(handle)
        return receiver


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    """Local webhook receivers on 127.0.0.1 (threaded: concurrent notices)."""
    server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    server.start()
    try:
        yield Receivers(server)
    finally:
        server.clear()
        server.stop()


# --- Broker, events and the notifier ----------------------------------------------------


@pytest_asyncio.fixture
async def notifier_topics(kafka_bootstrap: str) -> str:
    """The notifier's topics exist on the session's broker; its bootstrap servers."""
    await create_topics(
        kafka_bootstrap,
        [
            TopicSpec(name)
            for name in (
                topics.RIGHTS,
                topics.RIGHTS_ANSWERS,
                topics.CONSENT,
                topics.SUBPROCESSOR,
                DLQ,
            )
        ],
    )
    return kafka_bootstrap


def erasure_requested(
    tenant_id: uuid.UUID,
    subject_ref: str | None = None,
    request_id: str | None = None,
    *,
    kind: rights_pb2.RequestKind.ValueType = rights_pb2.REQUEST_KIND_ERASURE,
) -> Event:
    """ErasureRequested as the consent service publishes it."""
    ref = subject_ref or secrets.token_hex(32)
    message = rights_pb2.ErasureRequested(
        tenant_id=str(tenant_id),
        subject_ref=ref,
        request_id=request_id or str(uuid.uuid4()),
        kind=kind,
        requester=rights_pb2.REQUESTER_TENANT,
    )
    message.requested_at.FromDatetime(utcnow())
    return Event(catalogue.ERASURE_REQUESTED, str(tenant_id), ref, message, "/consentry/consent")


def access_requested(
    tenant_id: uuid.UUID,
    subject_ref: str,
    export_public_key: bytes,
    request_id: str | None = None,
) -> Event:
    """AccessRequested as the consent service publishes it (the request's X25519 key)."""
    message = rights_pb2.AccessRequested(
        tenant_id=str(tenant_id),
        subject_ref=subject_ref,
        request_id=request_id or str(uuid.uuid4()),
        export_public_key=export_public_key,
    )
    message.requested_at.FromDatetime(utcnow())
    return Event(
        catalogue.ACCESS_REQUESTED, str(tenant_id), subject_ref, message, "/consentry/consent"
    )


def consent_withdrawn(tenant_id: uuid.UUID, purpose: str, subject_ref: str | None = None) -> Event:
    """ConsentWithdrawn of `purpose` as the consent service publishes it."""
    return consent_event(
        str(tenant_id),
        subject_ref or secrets.token_hex(32),
        2,
        given=False,
        purpose=purpose,
        source="/consentry/consent",
    )


async def produce(bootstrap: str, items: Iterable[Event | KafkaRecord]) -> None:
    """Put events (or raw records) on their topics, in order, acks=all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2)
    await producer.start()
    try:
        sent = []
        for item in items:
            record = encode(item) if isinstance(item, Event) else item
            sent.append(
                await producer.send(
                    record.topic, record.value, key=record.key, headers=list(record.headers)
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


@pytest.fixture
def notifier_settings(app_dsn: str, notifier_topics: str) -> NotifierSettings:
    """Notifier settings for tests: a group of its own, short retries and timeouts."""
    return NotifierSettings(
        database_url=app_dsn,
        kafka_bootstrap_servers=notifier_topics,
        environment="test",
        notifier_group_id=f"test-notifier-{secrets.token_hex(4)}",
        notifier_session_timeout=2.0,
        notifier_commit_interval=0.2,
        public_url=PUBLIC_URL,
        retry_base_seconds=0.05,
        retry_cap_seconds=0.2,
        retry_window_seconds=60.0,
        ack_resend_seconds=3600.0,
        sender_poll_seconds=0.05,
        webhook_timeout_seconds=10.0,
    )


@contextlib.asynccontextmanager
async def notifier(settings: NotifierSettings) -> AsyncIterator[asyncio.Task[None]]:
    """`run_notifier` in this process until the block ends (stopped as by SIGTERM), and,
    unless the notifier posts itself (`notifier_sender`), `run_sender` next to it, as a
    deployment runs the `sender` command."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_notifier(settings, stop))
    sending = None if settings.notifier_sender else asyncio.create_task(run_sender(settings, stop))
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)
        if sending is not None:
            await asyncio.wait_for(sending, timeout=30)


async def eventually(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    seconds: float = 60.0,
    interval: float = 0.05,
) -> T:
    """Poll `probe` until `done(value)`; the last value, or AssertionError after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        value = await probe()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met after {seconds} s; last value: {value!r}")
        await asyncio.sleep(interval)


async def published(
    db: asyncpg.Connection, tenant_id: uuid.UUID, *types: catalogue.EventType
) -> list[ReceivedEvent]:
    """The events of `types` in the outbox for `tenant_id` (other tests' tenants share the
    broker's topics, so a fresh notifier group also makes notices for theirs)."""
    return [event for event in await outbox_events(db, *types) if event.tenant_id == str(tenant_id)]


def sign_ack(
    secret: str, body: dict[str, Any], *, at: datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    """A recipient's acknowledgement callback: body and Standard Webhooks headers (new id)."""
    raw = json.dumps(body).encode()
    headers = signing.sign(
        [signing.parse_secret(secret)], f"msg_{uuid.uuid4().hex}", raw.decode(), at
    )
    return raw, {**headers, "content-type": "application/json"}
