"""Models of the audit API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class BrokenEntry(BaseModel):
    """The first entry at which a chain stops verifying, and why."""

    tenant_id: str
    seq: int
    event_id: str | None
    reason: str


class ChainReport(BaseModel):
    """The result of verifying one tenant's chain."""

    tenant_id: str
    ok: bool
    entries: int = Field(description="entries checked")
    head_seq: int
    head_hash: str = Field(description="hex chain hash of the last entry")
    broken: BrokenEntry | None = None


class TraceOut(BaseModel):
    """The W3C trace the audited event carried (`ce_traceparent`), as in the entry bytes."""

    traceparent: str = Field(description="W3C traceparent, version-00 form")
    trace_id: str = Field(description="32 hex digits: look the trace up in your tracing backend")
    parent_id: str = Field(description="16 hex digits: the span that published the event")


class AuditEntryMetadata(BaseModel):
    """What the entry bytes say about the event besides its payload."""

    trace: TraceOut | None = Field(
        default=None, description="the event's trace; null when it carried none"
    )


class AuditEntryOut(BaseModel):
    """One entry of the chain, as stored (entry bytes base64 in `entry`); `metadata` is read
    from those bytes (it is covered by the hashes)."""

    seq: int
    event_id: str
    event_type: str
    subject_ref: str
    entry: str = Field(description="base64 of the stored consentry.audit.v1.AuditEntry bytes")
    leaf_hash: str
    chain_hash: str
    appended_at: datetime
    metadata: AuditEntryMetadata = Field(default_factory=AuditEntryMetadata)


class AuditEntryPage(BaseModel):
    """A page of entries; ask again with `after_seq = next_after_seq` for more."""

    entries: list[AuditEntryOut]
    next_after_seq: int | None


class CheckpointOut(BaseModel):
    """A signed checkpoint: the signature (Ed25519, base64url) covers the body described in
    docs/audit-formats.md, built from tenant_id, tree_size, root_hash and timestamp."""

    tenant_id: str
    tree_size: int
    root_hash: str = Field(description="hex Merkle tree hash (RFC 6962) at tree_size")
    timestamp: str = Field(description="RFC 3339, UTC, seconds")
    key_id: str
    signature: str = Field(description="base64url (no padding) Ed25519 signature")


class Jwk(BaseModel):
    """One Ed25519 public key (RFC 8037)."""

    kty: str = "OKP"
    crv: str = "Ed25519"
    kid: str
    x: str = Field(description="base64url (no padding) raw public key")
    alg: str = "EdDSA"
    use: str = "sig"


class Jwks(BaseModel):
    """Every key that ever signed a checkpoint: old checkpoints stay verifiable."""

    keys: list[Jwk]
