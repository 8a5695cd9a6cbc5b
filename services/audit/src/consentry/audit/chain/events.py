"""The audit topic's events: each appended entry and each signed checkpoint."""

from __future__ import annotations

from consentry.audit.v1 import audit_pb2
from consentry.eventing import catalogue
from consentry.eventing.envelope import Event

SOURCE = "/consentry/audit"


def entry_appended(
    tenant_id: str, seq: int, entry: bytes, leaf_hash: bytes, chain_hash: bytes
) -> Event:
    """`consentry.audit.entry_appended.v1` for one stored entry."""
    message = audit_pb2.EntryAppended(
        tenant_id=tenant_id, seq=seq, entry=entry, leaf_hash=leaf_hash, chain_hash=chain_hash
    )
    return _chain_event(catalogue.AUDIT_ENTRY_APPENDED, tenant_id, message)


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
