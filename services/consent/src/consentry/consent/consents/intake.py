"""The intake worker: product code's consent captures from the intake topic, applied like HTTP.

Each `consentry.consent.capture_requested.v1` event is validated by the same rules as
`POST /v1/subjects/{id}/consents` (`service.prepare_capture`) and recorded by the same code
(`capture.apply_captures`), in the consumer's transaction: the ledger, the current state and
the outbox rows of the resulting `consent.given` / `consent.withdrawn` events commit together
with the inbox row of the event id, so a redelivered or resent event is applied once. A
capture the rules refuse is dead-lettered with the problem's slug as the reason
(`dlq.reason`, e.g. `purpose-not-withdrawable`) and the partition keeps moving.

Intake captures get no receipt (nobody waits for an answer); their ledger rows carry the
receipt id `null`. The child flag of a refused under-13 capture is not kept (the refusal rolls
the record back): product code that wants the flag recorded uses the HTTP API.
"""

from __future__ import annotations

import asyncio
from datetime import UTC
from uuid import UUID

from consentry.consent.consents.capture import apply_captures
from consentry.consent.consents.events import METHODS
from consentry.consent.consents.models import CaptureContext, ConsentMethod, ConsentStatus
from consentry.consent.consents.service import prepare_capture
from consentry.consent.db import set_tenant
from consentry.consent.policies.catalogue import PolicyCache
from consentry.consent.v1 import consent_pb2
from consentry.eventing import kafka, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent
from consentry.eventing.settings import DatabaseSettings, KafkaSettings
from consentry.httpapi.problems import Problem

GROUP_ID = "consent-intake"
_METHODS = {proto: method for method, proto in METHODS.items()}
_STATUSES = {
    consent_pb2.CONSENT_STATUS_GIVEN: ConsentStatus.GIVEN,
    consent_pb2.CONSENT_STATUS_WITHDRAWN: ConsentStatus.WITHDRAWN,
}


class IntakeSettings(DatabaseSettings, KafkaSettings):
    """The intake worker: the consent database and the broker."""

    intake_group_id: str = GROUP_ID


def _reject(reason: str, detail: str) -> PoisonMessage:
    return PoisonMessage(reason, detail)


class IntakeHandler:
    """Applies one capture event in the consumer's transaction (a savepoint per record)."""

    def __init__(self, policies: PolicyCache) -> None:
        self._policies = policies

    async def __call__(self, conn: Connection, event: ReceivedEvent) -> None:
        """Record the capture, or raise PoisonMessage with the refusal's slug."""
        message = event.message
        if not isinstance(message, consent_pb2.ConsentCaptureRequested):
            raise _reject("wrong-event-type", f"{event.type.name} is not a capture request")
        tenant_id = UUID(event.tenant_id)  # decode() checked it is a UUID
        try:
            purposes: dict[str, ConsentStatus] = {}
            for decision in message.decisions:
                if decision.status not in _STATUSES:
                    raise _reject("validation-error", "a decision has no status")
                purposes[decision.purpose] = _STATUSES[decision.status]
            context = CaptureContext.model_validate(
                {
                    "policy_version": message.policy_version,
                    "method": _METHODS.get(message.method, ConsentMethod.API),
                    "source": message.source or None,
                    "occurred_at": message.occurred_at.ToDatetime(tzinfo=UTC)
                    if message.HasField("occurred_at")
                    else None,
                    "gpc": message.gpc,
                    "age": message.age if message.HasField("age") else None,
                }
            )
            rules = await self._policies.get(tenant_id)
            capture = prepare_capture(
                rules,
                tenant_id=tenant_id,
                subject_ref=event.subject_ref,
                purposes=purposes,
                context=context,
                gpc_signal=False,
                fingerprint=None,
            )
        except Problem as problem:
            raise _reject(problem.slug, problem.detail or problem.title) from None
        except ValueError as error:  # pydantic's ValidationError is a ValueError
            raise _reject("validation-error", str(error).splitlines()[0]) from None
        await set_tenant(conn, tenant_id)
        (outcome,) = await apply_captures(conn, tenant_id, [capture])
        if isinstance(outcome, Problem):
            raise _reject(outcome.slug, outcome.detail or outcome.title)


async def run_intake(settings: IntakeSettings, stop: asyncio.Event) -> None:
    """Apply capture events from the intake topic until `stop` is set."""
    pool = await create_pool(settings)
    producer = kafka.producer(settings, "-intake-dlq")
    consumer = kafka.consumer(settings, settings.intake_group_id, topics.CONSENT_INTAKE)
    await producer.start()
    await consumer.start()
    try:
        handler = IntakeHandler(PolicyCache(pool))
        await EventConsumer(settings.intake_group_id, consumer, producer, pool, handler).run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
