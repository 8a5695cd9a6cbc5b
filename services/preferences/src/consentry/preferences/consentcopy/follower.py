"""The consent follower: this service's copy of consent state, from the consent topic.

The preferences service must know whether a subject gave the `marketing-email` consent, and
the tenant's policy version in effect, without reading the consent database. This worker
reads `consentry.consent.v1`:

- `ConsentGiven` / `ConsentWithdrawn` set the subject's row for the purpose in
  `consent_copy`, but only when the event's `subject_version` is greater than the stored
  row's: an older event arriving late (or again) never overwrites a newer decision.
- `PolicyEffective` sets the tenant's row in `tenant_policy` when its `effective_at` is later
  than the stored one.
- An event this copy cannot hold (a subject version beyond 2^63 - 1, a timestamp out of
  range) is dead-lettered (`schema-violation`) rather than retried.
- Every other type on the topic (policy publications, re-consent flags) is not needed here
  and is skipped (its event id is still claimed, so it is not looked at twice).

Throughput: a whole partition batch is applied at once (`EventConsumer`'s batch path): one
inbox statement, then per tenant in the batch one statement for its decisions (the newest of
each subject and purpose) and one for its policy. If the database refuses anything, the
consumer applies the batch record by record with the same code and dead-letters the record
at fault.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from consentry.consent.v1 import consent_pb2, policy_pb2
from consentry.eventing import kafka, topics
from consentry.eventing.consumer import EventConsumer
from consentry.eventing.db import Connection, create_pool, set_tenant
from consentry.eventing.envelope import PoisonMessage, ReceivedEvent, field_time
from consentry.preferences.consentcopy import repository
from consentry.preferences.settings import ConsentFollowerSettings

# (subject_ref, purpose, given, subject_version, policy_version, decided_at)
DecisionRow = tuple[str, str, bool, int, str, datetime]


class _TenantChanges:
    """What one batch changes for one tenant: the newest decision per subject and purpose,
    and the latest policy version in effect."""

    def __init__(self) -> None:
        self.decisions: dict[tuple[str, str], DecisionRow] = {}
        self.policy: tuple[str, datetime] | None = None

    def decide(self, row: DecisionRow) -> None:
        key = (row[0], row[1])
        current = self.decisions.get(key)
        if current is None or current[3] < row[3]:
            self.decisions[key] = row

    def take_effect(self, version: str, effective_at: datetime) -> None:
        if self.policy is None or self.policy[1] < effective_at:
            self.policy = (version, effective_at)


# `subject_version` is a uint64 on the wire and a bigint here. A larger value is refused as
# poison before the database sees it: asyncpg would refuse it client-side, which the consumer
# takes for a transient error and retries for ever.
MAX_SUBJECT_VERSION = 2**63 - 1


def _decision_row(event: ReceivedEvent, decision: consent_pb2.ConsentDecision) -> DecisionRow:
    if decision.subject_version > MAX_SUBJECT_VERSION:
        raise PoisonMessage("schema-violation", "subject_version is out of range")
    return (
        decision.subject_ref,
        decision.purpose,
        isinstance(event.message, consent_pb2.ConsentGiven),
        decision.subject_version,
        decision.policy_version,
        field_time(decision, "occurred_at", event.time),
    )


async def apply_events(conn: Connection, events: Sequence[ReceivedEvent]) -> None:
    """Fold consent-topic events into the copy, in the consumer's transaction (a batch, or
    one record on the per-record path)."""
    changes: dict[UUID, _TenantChanges] = {}
    for event in events:
        message = event.message
        if isinstance(message, consent_pb2.ConsentGiven | consent_pb2.ConsentWithdrawn):
            tenant = changes.setdefault(UUID(event.tenant_id), _TenantChanges())
            tenant.decide(_decision_row(event, message.decision))
        elif isinstance(message, policy_pb2.PolicyEffective):
            policy = message.policy
            # (ce_time of PolicyEffective is the effective instant too)
            effective_at = field_time(policy, "effective_at", event.time)
            tenant = changes.setdefault(UUID(event.tenant_id), _TenantChanges())
            tenant.take_effect(policy.version, effective_at)
    for tenant_id, tenant in sorted(changes.items()):
        await set_tenant(conn, tenant_id)  # RLS: each tenant's rows under its own scope
        await repository.upsert_decisions(conn, tenant_id, list(tenant.decisions.values()))
        if tenant.policy is not None:
            await repository.upsert_policy(conn, tenant_id, *tenant.policy)


async def apply_event(conn: Connection, event: ReceivedEvent) -> None:
    """The per-record path: `apply_events` for one event."""
    await apply_events(conn, [event])


async def run_consent_follower(settings: ConsentFollowerSettings, stop: asyncio.Event) -> None:
    """Follow the consent topic until `stop` is set (dead letters:
    `consentry.dlq.<consent_follower_group_id>`, by default
    `consentry.dlq.preferences-consent-follower`)."""
    pool = await create_pool(settings)
    producer = kafka.producer(settings, "-consent-follower-dlq")
    consumer = kafka.consumer(settings, settings.consent_follower_group_id, topics.CONSENT)
    await producer.start()
    await consumer.start()
    try:
        name = settings.consent_follower_group_id
        await EventConsumer(
            name, consumer, producer, pool, apply_event, batch_handler=apply_events
        ).run(stop)
    finally:
        await consumer.stop()
        await producer.stop()
        await pool.close()
