"""Proof documents for auditors, in the formats of docs/audit-formats.md: exports, inclusion
and consistency proofs, and a subject's proof-of-consent bundle.

Proofs are computed from the tree's leaf hashes up to the checkpoint's size: O(n) per proof
(fine for the sizes served today; subtree hashes can be cached when logs grow).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import asyncpg

from consentry.audit import merkle
from consentry.eventing.db import Connection

_CHECKPOINTS = """
SELECT tenant_id, tree_size, root_hash, checkpoint_time, key_id, signature
FROM audit_checkpoints WHERE tenant_id = $1 ORDER BY tree_size
"""
_CHECKPOINT = """
SELECT tenant_id, tree_size, root_hash, checkpoint_time, key_id, signature
FROM audit_checkpoints WHERE tenant_id = $1 AND ($2::bigint IS NULL OR tree_size = $2)
ORDER BY tree_size DESC LIMIT 1
"""
_KEYS = "SELECT key_id, public_key FROM audit_signing_keys ORDER BY first_used, key_id"
_LEAVES = "SELECT leaf_hash FROM audit_entries WHERE tenant_id = $1 AND seq <= $2 ORDER BY seq"
_ENTRY = "SELECT entry FROM audit_entries WHERE tenant_id = $1 AND seq = $2"
_SUBJECT_ENTRIES = """
SELECT seq, entry FROM audit_entries
WHERE tenant_id = $1 AND subject_ref = $2 AND seq <= $3 ORDER BY seq
"""
_EXPORT = (
    "SELECT seq, entry, leaf_hash, chain_hash FROM audit_entries WHERE tenant_id = $1 ORDER BY seq"
)


class ProofError(LookupError):
    """What was asked for does not exist (no such checkpoint, entry or subject)."""


def checkpoint_document(row: asyncpg.Record) -> dict[str, Any]:
    """A stored checkpoint in its JSON form (the timestamp exactly as signed)."""
    return {
        "tenant_id": str(row["tenant_id"]),
        "tree_size": row["tree_size"],
        "root_hash": row["root_hash"].hex(),
        "timestamp": merkle.timestamp(row["checkpoint_time"]),
        "key_id": row["key_id"],
        "signature": merkle.b64url(row["signature"]),
    }


async def key_set(conn: Connection) -> dict[str, Any]:
    """JWKS of every key that ever signed a checkpoint."""
    rows = await conn.fetch(_KEYS)
    return {"keys": [merkle.raw_jwk(row["key_id"], row["public_key"]) for row in rows]}


async def checkpoint(conn: Connection, tenant_id: UUID, tree_size: int | None) -> dict[str, Any]:
    """The checkpoint at `tree_size` (the newest when None)."""
    row = await conn.fetchrow(_CHECKPOINT, tenant_id, tree_size)
    if row is None:
        raise ProofError("no checkpoint" + (f" at tree size {tree_size}" if tree_size else " yet"))
    return checkpoint_document(row)


async def _leaves(conn: Connection, tenant_id: UUID, size: int) -> list[bytes]:
    return [row["leaf_hash"] for row in await conn.fetch(_LEAVES, tenant_id, size)]


async def inclusion(
    conn: Connection, tenant_id: UUID, seq: int, tree_size: int | None
) -> dict[str, Any]:
    """An inclusion proof of entry `seq` against a checkpoint."""
    signed = await checkpoint(conn, tenant_id, tree_size)
    if seq > signed["tree_size"]:
        raise ProofError(
            f"entry {seq} is not covered by the checkpoint at size {signed['tree_size']}"
        )
    entry = await conn.fetchval(_ENTRY, tenant_id, seq)
    if entry is None:
        raise ProofError(f"no entry {seq}")
    leaves = await _leaves(conn, tenant_id, signed["tree_size"])
    return merkle.inclusion_document(leaves, entry, seq - 1, signed, await key_set(conn))


async def consistency(
    conn: Connection, tenant_id: UUID, old_size: int, new_size: int | None
) -> dict[str, Any]:
    """A consistency proof between two checkpoints (the newest when `new_size` is None)."""
    old = await checkpoint(conn, tenant_id, old_size)
    new = await checkpoint(conn, tenant_id, new_size)
    if old["tree_size"] > new["tree_size"]:
        raise ProofError("the old checkpoint must not be larger than the new one")
    leaves = await _leaves(conn, tenant_id, new["tree_size"])
    return merkle.consistency_document(leaves, old, new, await key_set(conn))


async def bundle(conn: Connection, tenant_id: UUID, subject_ref: str) -> dict[str, Any]:
    """A subject's proof of consent: their entries with inclusion proofs against the newest
    checkpoint, which anyone can verify offline with consentry-verify."""
    signed = await checkpoint(conn, tenant_id, None)
    rows = await conn.fetch(_SUBJECT_ENTRIES, tenant_id, subject_ref, signed["tree_size"])
    if not rows:
        raise ProofError("no checkpointed entry for this subject")
    leaves = await _leaves(conn, tenant_id, signed["tree_size"])
    entries = [(row["seq"], row["entry"]) for row in rows]
    return merkle.bundle_document(leaves, subject_ref, entries, signed, await key_set(conn))


async def export_lines(conn: Connection, tenant_id: UUID) -> AsyncIterator[str]:
    """The tenant's export, line by line (call inside a repeatable-read transaction)."""
    checkpoints = [checkpoint_document(row) for row in await conn.fetch(_CHECKPOINTS, tenant_id)]
    yield merkle.export_header(str(tenant_id), await key_set(conn), checkpoints) + "\n"
    async for row in conn.cursor(_EXPORT, tenant_id, prefetch=2000):
        yield (
            merkle.export_line(row["seq"], row["entry"], row["leaf_hash"], row["chain_hash"]) + "\n"
        )
