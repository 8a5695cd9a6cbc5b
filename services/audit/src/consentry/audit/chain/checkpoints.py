"""Signed checkpoints: a tenant's tree size and Merkle root, signed with Ed25519.

The signed body follows the C2SP tlog-checkpoint "signed note" shape (see
docs/audit-formats.md): origin line, tree size, base64 root hash, timestamp. Public keys are
kept in the database for ever, so old checkpoints stay verifiable after a key rotation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from consentry.audit import merkle
from consentry.audit.chain import events
from consentry.audit.consentry_verify import checkpoint_body
from consentry.eventing import outbox
from consentry.eventing.db import Connection

_LOCK_HEAD = "SELECT * FROM audit_lock_head($1)"
_ADD_MANY = """
SELECT audit_add_checkpoint(c.tenant_id, c.tree_size, c.root_hash, $4, $5, c.signature)
FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $6::bytea[])
     AS c (tenant_id, tree_size, root_hash, signature)
"""
_REGISTER = "SELECT audit_register_key($1, $2)"
# Chains grown by $1 entries since their last checkpoint, or whose last checkpoint is older
# than the interval $3 at time $2 (now), or later than now: this clock was stepped back, and
# waiting until it passes that time again would leave new entries unsigned for as long.
_DUE_FROM = """
FROM audit_chain_heads h
LEFT JOIN LATERAL (
    SELECT tree_size, checkpoint_time FROM audit_checkpoints c
    WHERE c.tenant_id = h.tenant_id ORDER BY tree_size DESC LIMIT 1
) c ON true
WHERE h.seq > coalesce(c.tree_size, 0)
  AND (h.seq - coalesce(c.tree_size, 0) >= $1
       OR coalesce(c.checkpoint_time, '-infinity') <= $2::timestamptz - $3::interval
       OR c.checkpoint_time > $2::timestamptz)
"""
_AMONG = "  AND h.tenant_id = ANY($4::uuid[])\n"
_DUE = "SELECT h.tenant_id" + _DUE_FROM
_DUE_AMONG = _DUE + _AMONG
# The due ones of tenants whose heads the caller's transaction holds, with their trees.
_DUE_HELD = (
    "SELECT h.tenant_id, h.seq AS tree_size, audit_frontier_root(h.frontier) AS root_hash"
    + _DUE_FROM
    + _AMONG
    + "ORDER BY h.tenant_id\n"
)


@dataclass(frozen=True)
class Signer:
    """The appender's signing key and its id (derived from the public key unless given)."""

    private_key: Ed25519PrivateKey
    key_id: str

    @classmethod
    def from_seed(cls, seed: bytes, key_id: str | None = None) -> Signer:
        """A signer from a 32-byte Ed25519 seed."""
        private_key = Ed25519PrivateKey.from_private_bytes(seed)
        return cls(private_key, key_id or default_key_id(public_bytes(private_key)))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return public_bytes(self.private_key)


def public_bytes(private_key: Ed25519PrivateKey) -> bytes:
    """Raw public key bytes of an Ed25519 private key."""
    return private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def default_key_id(public_key: bytes) -> str:
    """A stable key id: the first 16 hex digits of SHA-256 of the public key."""
    return hashlib.sha256(public_key).hexdigest()[:16]


async def register(conn: Connection, signer: Signer) -> None:
    """Record the signer's public key (idempotent; a key id reused for another key fails)."""
    await conn.execute(_REGISTER, signer.key_id, signer.public_key)


async def checkpoint(
    conn: Connection, signer: Signer, tenant_id: UUID, *, every: int, interval: timedelta
) -> int | None:
    """Sign and store a checkpoint of the tenant's tree if one is due; return its size.

    Runs in the caller's transaction: the tenant's head stays locked until it ends, so the
    signed root is the root of the tree at that size.
    """
    row = await conn.fetchrow(_LOCK_HEAD, tenant_id)
    if row is None or row["tree_size"] == 0:
        return None
    last_size = row["last_checkpoint_size"] or 0
    now = datetime.now(UTC)
    last_time = row["last_checkpoint_time"]
    grown = row["tree_size"] - last_size
    # A last checkpoint "in the future" means this clock was stepped back: due now too.
    due = grown > 0 and (
        grown >= every or last_time is None or now - last_time >= interval or last_time > now
    )
    if not due:
        return None
    await _sign_and_store(conn, signer, [(tenant_id, row["tree_size"], row["root_hash"])], now)
    return int(row["tree_size"])


async def checkpoint_held(
    conn: Connection,
    signer: Signer,
    tenants: Sequence[UUID],
    *,
    every: int,
    interval: timedelta,
) -> list[int]:
    """Sign and store a checkpoint of each of `tenants` that is due (as `checkpoint` does),
    in three round trips however many are due (one if none is); return their sizes.

    The caller's transaction already holds the heads of `tenants` (it appended to them), so
    their trees are read without locking them again; audit_add_checkpoint() still checks
    each signed tree against its head under the lock.
    """
    now = datetime.now(UTC)
    rows = await conn.fetch(_DUE_HELD, every, now, interval, list(tenants))
    trees = [(row["tenant_id"], row["tree_size"], row["root_hash"]) for row in rows]
    if trees:
        await _sign_and_store(conn, signer, trees, now)
    return [int(size) for _, size, _ in trees]


async def _sign_and_store(
    conn: Connection, signer: Signer, trees: Sequence[tuple[UUID, int, bytes]], now: datetime
) -> None:
    """Sign each (tenant, tree size, root) at `now`, store the checkpoints, and queue their
    publication on the audit topic."""
    timestamp = merkle.timestamp(now)
    moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    signatures = [
        signer.private_key.sign(checkpoint_body(str(tenant), size, root, timestamp))
        for tenant, size, root in trees
    ]
    await conn.execute(
        _ADD_MANY,
        [tenant for tenant, _, _ in trees],
        [size for _, size, _ in trees],
        [root for _, _, root in trees],
        moment,
        signer.key_id,
        signatures,
    )
    await outbox.add_many(
        conn,
        (
            events.checkpoint_signed(str(tenant), size, root, timestamp, signer.key_id, signature)
            for (tenant, size, root), signature in zip(trees, signatures, strict=True)
        ),
    )


async def due_tenants(
    conn: Connection,
    *,
    every: int,
    interval: timedelta,
    among: Sequence[UUID] | None = None,
) -> list[UUID]:
    """Tenants (of `among`, if given) whose tree grew by `every` entries, or has waited
    `interval`, since their last checkpoint (or whose last checkpoint is later than now: the
    clock was stepped back); in tenant order."""
    now = datetime.now(UTC)
    if among is None:
        rows = await conn.fetch(_DUE, every, now, interval)
    else:
        rows = await conn.fetch(_DUE_AMONG, every, now, interval, list(among))
    return sorted(row["tenant_id"] for row in rows)
