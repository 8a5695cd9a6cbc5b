"""The sender: posts due deliveries to the recipients as Standard Webhooks, retries with
exponential backoff and full jitter, dead-letters at the end of the window.

Deliveries are a durable work queue in PostgreSQL. A sender claims due rows (`FOR UPDATE
SKIP LOCKED`, so several senders share the work) and pushes each claimed row's next attempt
a lease ahead, then posts outside any transaction; a recorder task writes the outcomes as
they come, many in one transaction per tenant (one commit per webhook would cap the rate).
A sender that dies mid-post leaves its claims to lapse: they are posted again, with the
same webhook-id (recipients deduplicate on it). Every attempt of a delivery carries the
same body and webhook-id; the signature and timestamp are made per attempt.

Outcomes: a 2xx whose answer is itself signed by the recipient (same webhook-id) and says
`{"acknowledged": true}` acknowledges at once; any other 2xx is `delivered` and the notice
is sent again after `ack_resend_seconds` until a callback acknowledges it; a non-2xx, a
timeout or a transport error is retried after `uniform(0, min(cap, base * 2^(n-1)))`
seconds (full jitter) until the retry window ends, when the delivery is dead-lettered,
flagged, and DeliveryDeadLettered is published (also for a notice delivered but never
acknowledged within the window: `not-acknowledged`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import groupby
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg

from consentry.eventing import metrics
from consentry.eventing.consumer import TRANSIENT_ERRORS
from consentry.eventing.db import Pool, create_pool, tenant_transaction
from consentry.eventing.envelope import utcnow
from consentry.eventing.logs import get_logger
from consentry.eventing.sealing import Sealer
from consentry.subprocessors import signing
from consentry.subprocessors.deliveries import repository
from consentry.subprocessors.deliveries.models import Claimed
from consentry.subprocessors.deliveries.service import record_acknowledged, record_dead_letters
from consentry.subprocessors.recipients.service import open_secrets
from consentry.subprocessors.settings import SenderSettings

log = get_logger(__name__)
CHANNEL = "subprocessor_deliveries"
USER_AGENT = "consentry-subprocessors/0.1 (+Standard Webhooks)"
NOT_ACKNOWLEDGED = "not-acknowledged"


@dataclass(frozen=True)
class Outcome:
    """What one attempt achieved: `acknowledged`, `delivered`, or `failed` with `error`."""

    result: str
    error: str = ""


ACKNOWLEDGED = Outcome("acknowledged")
DELIVERED = Outcome("delivered")
# A delivered notice whose window closed without an acknowledgement: not sent again.
EXPIRED = Outcome("failed", NOT_ACKNOWLEDGED)
RECORD_BATCH = 500  # most outcomes recorded in one transaction
HAND_OVER_SLOTS = 4  # deliveries handed over may wait for up to this many rounds of slots


@dataclass(frozen=True)
class Result:
    """An attempt's outcome, waiting to be recorded."""

    delivery: Claimed
    outcome: Outcome
    at: datetime


def backoff_seconds(attempts: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter (AWS): uniform(0, min(cap, base * 2^(attempts-1)))."""
    ceiling = min(cap, base * 2 ** min(max(attempts - 1, 0), 62))
    return rng.uniform(0, ceiling)


def answer_acknowledges(
    secrets_: list[bytes],
    message_id: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_seconds: float,
) -> bool:
    """A 2xx answer that is a signed acknowledgement: the recipient signed its body with
    its secret under the notice's own webhook-id, and the body says acknowledged."""
    lowered = {name.lower(): value for name, value in headers.items()}
    if lowered.get("webhook-id") != message_id:
        return False
    try:
        signing.verify(secrets_, body, lowered, tolerance_seconds=tolerance_seconds)
        answer = json.loads(body)
    except (signing.SignatureError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("acknowledged") is True


class Sender:
    """Posts due deliveries until stopped; `wake()` makes it look for work at once."""

    def __init__(
        self,
        pool: Pool,
        settings: SenderSettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._sealer: Sealer = settings.sealer()
        self._session: aiohttp.ClientSession | None = None
        self._rng = rng or random.Random()  # noqa: S311 - retry jitter, not a secret
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._results: asyncio.Queue[Result | None] = asyncio.Queue()
        # Deliveries the notifier of this process claimed for us at creation, with when.
        self._handed: deque[tuple[float, Claimed]] = deque()
        self.attempts = 0
        self.acknowledged = 0
        self.delivered = 0
        self.failed = 0
        self.dead_lettered = 0

    def wake(self) -> None:
        """New deliveries were committed: claim them now rather than at the next poll."""
        self._wake.set()

    def has_room(self) -> bool:
        """Whether new deliveries may be handed over (claimed for this sender at creation)
        rather than left for any sender to claim: not while a backlog waits for slots."""
        return len(self._handed) + len(self._inflight) < HAND_OVER_SLOTS * (
            self._settings.sender_concurrency
        )

    def hand_over(self, deliveries: Sequence[Claimed]) -> None:
        """Deliveries committed already claimed for this sender: post them as soon as a slot
        is free (no claim transaction, no waiting for the next poll)."""
        now = time.monotonic()
        self._handed.extend((now, delivery) for delivery in deliveries)
        self._wake.set()

    def _start_handed(self) -> None:
        """Start posting handed-over deliveries while slots are free. One held so long that
        its lease may have lapsed is left to the claim path (another sender may have it)."""
        stale = time.monotonic() - self._settings.lease_seconds / 2
        while self._handed and len(self._inflight) < self._settings.sender_concurrency:
            handed_at, delivery = self._handed.popleft()
            if handed_at >= stale:
                self._start(delivery)

    def _start(self, delivery: Claimed) -> None:
        task = asyncio.create_task(self.attempt(delivery))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim and post due deliveries until `stop` is set; then let posts in flight end."""
        listener = await self._listen()
        recorder = asyncio.create_task(self._recorder())
        try:
            await self._loop(stop)
        finally:
            await self._drain()
            self._results.put_nowait(None)  # after the outcomes of the posts in flight
            await recorder
            if listener is not None:
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    await listener.close()
            await self.close()

    async def close(self) -> None:
        """Close the HTTP client (`run` does this as it ends)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _listen(self) -> asyncpg.Connection | None:
        """A connection that wakes us on NOTIFY from other processes (best effort: polling
        finds the work anyway)."""
        try:
            conn = await asyncpg.connect(self._settings.database_url)
            await conn.add_listener(CHANNEL, lambda *_: self._wake.set())
        except TRANSIENT_ERRORS as exc:
            log.warning("cannot listen for new deliveries; polling only", error=repr(exc))
            return None
        return conn

    def session(self) -> aiohttp.ClientSession:
        """The HTTP client, made on first use (inside the running loop). aiohttp rather than
        httpx: measured on the development VM, a webhook post cost the sender ~1 ms of CPU
        with httpx and ~0.1 ms with aiohttp, at hundreds of webhooks a second the largest
        share of the notifier's CPU (ADR 0010). A proxy is a setting
        (`CONSENTRY_WEBHOOK_PROXY_URL`), not read from the environment per request (aiohttp's
        `trust_env` also reads ~/.netrc in a thread for every request); redirects are never
        followed; `_send` bounds each post's time."""
        if self._session is None:
            concurrency = self._settings.sender_concurrency
            proxy = self._settings.webhook_proxy_url
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency),
                headers={"user-agent": USER_AGENT},
                proxy=None if proxy is None else str(proxy),
            )
        return self._session

    async def _loop(self, stop: asyncio.Event) -> None:
        backoff = 0.2
        concurrency = self._settings.sender_concurrency
        while not stop.is_set():
            self._start_handed()
            free = concurrency - len(self._inflight)
            # Claim when half the slots are free (or none is busy): claims are transactions,
            # and topping up one slot at a time would make one per webhook under load.
            if self._handed or (free * 2 < concurrency and self._inflight):
                await self._idle(stop, slots=True)
                continue
            self._wake.clear()
            try:
                claimed = await self.claim(free)
                backoff = 0.2
            except TRANSIENT_ERRORS as exc:
                log.warning("claiming deliveries failed; retrying", error=repr(exc))
                await _wait(stop, backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for delivery in claimed:
                self._start(delivery)
            if claimed and len(claimed) == free:
                await asyncio.sleep(0)  # there may be more due: claim again when slots free
                continue
            await self._idle(stop, slots=False)

    async def _idle(self, stop: asyncio.Event, *, slots: bool) -> None:
        """Wait for the stop or the poll interval, and for a wake-up (or, with `slots`, for
        a post in flight to end: new work waits for free slots anyway)."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(stop.wait())]
        if not slots:
            waiters.append(asyncio.ensure_future(self._wake.wait()))
        try:
            await asyncio.wait(
                [*waiters, *self._inflight] if slots else waiters,
                timeout=self._settings.sender_poll_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _drain(self) -> None:
        if not self._inflight:
            return
        _, pending = await asyncio.wait(
            set(self._inflight), timeout=self._settings.webhook_timeout_seconds + 1
        )
        for task in pending:
            task.cancel()  # its claim lapses and another attempt is made later

    async def claim(self, limit: int) -> list[Claimed]:
        """Claim up to `limit` due deliveries, across tenants, oldest first."""
        async with self._pool.acquire() as conn:
            due = await repository.due_deliveries(conn, limit)
        claimed: list[Claimed] = []
        by_tenant = sorted(due, key=lambda row: (row["tenant_id"], row["id"]))
        for tenant_id, rows in groupby(by_tenant, key=lambda row: row["tenant_id"]):
            ids = [row["id"] for row in rows]
            async with tenant_transaction(self._pool, tenant_id) as conn:
                held = await repository.claim(
                    conn,
                    tenant_id=tenant_id,
                    delivery_ids=ids,
                    lease_seconds=self._settings.lease_seconds,
                )
            claimed.extend(Claimed.of(tenant_id, row) for row in held)
        return claimed

    async def attempt(self, delivery: Claimed) -> None:
        """Post one claimed delivery; its outcome goes to the recorder."""
        try:
            outcome = EXPIRED if delivery.expired else await self.post(delivery)
        except Exception:
            log.exception("attempt failed unexpectedly", delivery_id=str(delivery.id))
            return  # the claim lapses and the delivery is attempted again
        self._results.put_nowait(Result(delivery, outcome, utcnow()))

    async def post(self, delivery: Claimed) -> Outcome:
        """One signed POST; the outcome (nothing is recorded here)."""
        secrets_ = open_secrets(
            self._sealer,
            tenant_id=delivery.tenant_id,
            recipient_id=delivery.recipient_id,
            current=delivery.secret_sealed,
            previous=delivery.previous_secret_sealed,
            previous_expires_at=delivery.previous_secret_expires_at,
            now=utcnow(),
        )
        message_id = signing.webhook_id(delivery.id)
        headers = signing.sign(secrets_, message_id, delivery.payload)
        headers["content-type"] = "application/json"
        self.attempts += 1
        started = time.perf_counter()
        outcome = await self._send(delivery, secrets_, message_id, headers)
        metrics.WEBHOOK_DURATION.labels(outcome.result).observe(time.perf_counter() - started)
        return outcome

    async def _send(
        self, delivery: Claimed, secrets_: list[bytes], message_id: str, headers: dict[str, str]
    ) -> Outcome:
        """The POST itself and what its answer means."""
        try:
            async with asyncio.timeout(self._settings.webhook_timeout_seconds):
                async with self.session().post(
                    delivery.webhook_url,
                    data=delivery.payload.encode(),
                    headers=headers,
                    allow_redirects=False,
                ) as response:
                    body = await _read_limited(response, self._settings.max_response_bytes)
        except TimeoutError:  # also aiohttp's own timeouts
            return Outcome("failed", "timeout")
        except aiohttp.ClientConnectorError:
            return Outcome("failed", "connect-error")
        except aiohttp.ClientError as exc:
            return Outcome("failed", f"transport-error:{type(exc).__name__}")
        if not 200 <= response.status < 300:
            return Outcome("failed", f"http-{response.status}")
        if answer_acknowledges(
            secrets_,
            message_id,
            response.headers,
            body,
            tolerance_seconds=self._settings.ack_tolerance_seconds,
        ):
            return ACKNOWLEDGED
        return DELIVERED

    async def _recorder(self) -> None:
        """Record outcomes as they come, many per transaction, until the end marker."""
        while True:
            first = await self._results.get()
            batch = [] if first is None else [first]
            ended = first is None
            while not ended and len(batch) < RECORD_BATCH and not self._results.empty():
                item = self._results.get_nowait()
                if item is None:
                    ended = True
                else:
                    batch.append(item)
            if batch:
                await self._record_safely(batch)
            if ended:
                return

    async def _record_safely(self, batch: list[Result]) -> None:
        try:
            await self.record(batch)
        except TRANSIENT_ERRORS as exc:
            # Not recorded: the claims lapse and these deliveries are attempted again (same
            # webhook-id), which recipients tolerate.
            log.warning("recording attempts failed", attempts=len(batch), error=repr(exc))

    async def record(self, results: Sequence[Result]) -> None:
        """Record attempt outcomes: per tenant one transaction for all of them."""
        for tenant_id, of_tenant in groupby(
            sorted(results, key=lambda r: r.delivery.tenant_id), key=lambda r: r.delivery.tenant_id
        ):
            await self._record_tenant(tenant_id, list(of_tenant))

    async def _record_tenant(self, tenant_id: UUID, results: list[Result]) -> None:
        acknowledged = [r.delivery.id for r in results if r.outcome is ACKNOWLEDGED]
        delivered = [r.delivery.id for r in results if r.outcome is DELIVERED]
        retries: list[tuple[UUID, str, datetime]] = []
        dead: list[tuple[UUID, str]] = []
        for result in results:
            if result.outcome.result != "failed":
                continue
            delivery = result.delivery
            if result.outcome is EXPIRED or result.at >= delivery.deadline_at:
                dead.append((delivery.id, result.outcome.error))
                continue
            delay = backoff_seconds(
                delivery.attempts,
                base=self._settings.retry_base_seconds,
                cap=self._settings.retry_cap_seconds,
                rng=self._rng,
            )
            retry_at = min(result.at + timedelta(seconds=delay), delivery.deadline_at)
            retries.append((delivery.id, result.outcome.error, retry_at))
        async with tenant_transaction(self._pool, tenant_id) as conn:
            if acknowledged:
                await record_acknowledged(
                    conn, tenant_id=tenant_id, deliveries=acknowledged, via="response"
                )
            if delivered:
                await repository.mark_delivered(
                    conn,
                    tenant_id=tenant_id,
                    delivery_ids=delivered,
                    recheck_seconds=self._settings.ack_resend_seconds,
                )
            if retries:
                await repository.mark_failed(conn, tenant_id=tenant_id, failures=retries)
            flagged = (
                await record_dead_letters(conn, tenant_id=tenant_id, failures=dead) if dead else []
            )
        self.acknowledged += len(acknowledged)
        self.delivered += len(delivered)
        self.failed += sum(
            1 for r in results if r.outcome.result == "failed" and r.outcome is not EXPIRED
        )
        self.dead_lettered += len(flagged)
        _count_outcomes(
            acknowledged=len(acknowledged),
            delivered=len(delivered),
            retries=[error for _, error, _ in retries],
            dead=[row["last_error"] or "" for row in flagged],
        )
        for row in flagged:
            log.warning(
                "delivery dead-lettered and flagged",
                delivery_id=str(row["id"]),
                recipient_id=str(row["recipient_id"]),
                error=row["last_error"],
            )


def _count_outcomes(
    *, acknowledged: int, delivered: int, retries: Sequence[str], dead: Sequence[str]
) -> None:
    """Count committed outcomes in `consentry_webhook_deliveries_total` (after the commit: an
    outcome whose recording failed is attempted again, and counted then)."""
    if acknowledged:
        metrics.WEBHOOK_DELIVERIES.labels("acknowledged", "").inc(acknowledged)
    if delivered:
        metrics.WEBHOOK_DELIVERIES.labels("delivered", "").inc(delivered)
    for outcome, reasons in (("retry_scheduled", retries), ("dead_lettered", dead)):
        for reason, count in Counter(reasons).items():
            metrics.WEBHOOK_DELIVERIES.labels(outcome, reason).inc(count)


async def _read_limited(response: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of the answer (a recipient cannot make us read gigabytes)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit]


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


async def run_sender(settings: SenderSettings, stop: asyncio.Event) -> None:
    """The `sender` command: post due deliveries until `stop` is set (more senders may run
    next to the notifier's own)."""
    pool = await create_pool(settings, stateless=True)
    try:
        await Sender(pool, settings).run(stop)
    finally:
        await pool.close()
