"""The audit topic's events: each appended entry and each signed checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime

from consentry.audit.v1 import audit_pb2
from consentry.eventing import catalogue, outbox
from consentry.eventing.envelope import Event, utcnow

SOURCE = "/consentry/audit"
# The ce_id of the template whose encoded headers `entry_appended_envelopes` cuts around it.
_TEMPLATE_ID = "00000000-0000-4000-8000-00000000abcd"


def entry_appended(
    tenant_id: str, seq: int, entry: bytes, leaf_hash: bytes, chain_hash: bytes
) -> Event:
    """`consentry.audit.entry_appended.v1` for one stored entry."""
    message = _entry_appended(tenant_id, seq, entry, leaf_hash, chain_hash)
    return _chain_event(catalogue.AUDIT_ENTRY_APPENDED, tenant_id, message)


@dataclasses.dataclass(frozen=True)
class Envelopes:
    """The envelopes of `entry_appended` events of some tenants, happening at one time, as
    `outbox.columns` writes them, but for the event id: for the tenant in `slots[tenant]`
    (from 1), the message key is `keys[slot - 1]` and the headers (JSON) of the event with
    ce_id `id` are `heads[slot - 1] + id + tails[slot - 1]`. `topic` and `event_type` are
    those of every row."""

    topic: str
    event_type: str
    slots: dict[str, int]
    keys: list[bytes]
    heads: list[str]
    tails: list[str]

    def headers(self, tenant_id: str, event_id: str) -> str:
        """The headers (JSON) of one event."""
        slot = self.slots[tenant_id] - 1
        return self.heads[slot] + event_id + self.tails[slot]


def entry_appended_envelopes(tenant_ids: Iterable[str], time: datetime | None = None) -> Envelopes:
    """The envelopes of `entry_appended` events of `tenant_ids`, happening at `time` (now by
    default): one envelope encoded by `outbox.columns` per tenant, whatever the number of
    events, cut around its ce_id."""
    moment = time or utcnow()
    kind = catalogue.AUDIT_ENTRY_APPENDED
    envelopes = Envelopes(kind.topic, kind.name, {}, [], [], [])
    for tenant_id in tenant_ids:
        if tenant_id in envelopes.slots:
            continue
        event = entry_appended(tenant_id, 1, b"", bytes(32), bytes(32))
        event = dataclasses.replace(event, id=_TEMPLATE_ID, time=moment)
        (_, (topic,), (key,), (name,), (encoded,), _) = outbox.columns([event])
        assert (topic, name) == (kind.topic, kind.name)
        head, tail = encoded.split(_TEMPLATE_ID)  # only ce_id holds it: exactly 2 parts
        envelopes.keys.append(key)
        envelopes.heads.append(head)
        envelopes.tails.append(tail)
        envelopes.slots[tenant_id] = len(envelopes.keys)
    return envelopes


def entry_appended_payload(
    tenant_id: str, seq: int, entry: bytes, leaf_hash: bytes, chain_hash: bytes
) -> bytes:
    """The payload of `entry_appended(...)` (its outbox row's), without the event."""
    message = _entry_appended(tenant_id, seq, entry, leaf_hash, chain_hash)
    return message.SerializeToString(deterministic=True)


def _entry_appended(
    tenant_id: str, seq: int, entry: bytes, leaf_hash: bytes, chain_hash: bytes
) -> audit_pb2.EntryAppended:
    return audit_pb2.EntryAppended(
        tenant_id=tenant_id, seq=seq, entry=entry, leaf_hash=leaf_hash, chain_hash=chain_hash
    )


def checkpoint_signed(
    tenant_id: str,
    tree_size: int,
    root_hash: bytes,
    timestamp: str,
    key_id: str,
    signature: bytes,
) -> Event:
    """`consentry.audit.checkpoint_signed.v1` for one stored checkpoint."""
    message = audit_pb2.CheckpointSigned(
        tenant_id=tenant_id,
        tree_size=tree_size,
        root_hash=root_hash,
        timestamp=timestamp,
        key_id=key_id,
        signature=signature,
    )
    return _chain_event(catalogue.AUDIT_CHECKPOINT_SIGNED, tenant_id, message)


def _chain_event(
    event_type: catalogue.EventType,
    tenant_id: str,
    message: audit_pb2.EntryAppended | audit_pb2.CheckpointSigned,
) -> Event:
    return Event(
        type=event_type,
        tenant_id=tenant_id,
        subject_ref=catalogue.AUDIT_CHAIN_SUBJECT,
        message=message,
        source=SOURCE,
    )
