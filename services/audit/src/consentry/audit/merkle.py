"""Merkle proof generation, checkpoint signing and the export/proof documents (service side).

Verification lives in `consentry_verify` (the standalone verifier); this module produces what it
checks. Proofs follow RFC 9162 section 2.1 (PATH, PROOF and SUBPROOF). They are computed from
the full list of leaf hashes: O(n) hashing per proof, fine for per-tenant trees of a few
million entries; storing interior nodes (or tiles) would make them O(log n).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from consentry.audit.consentry_verify import (
    BUNDLE_FORMAT,
    CONSISTENCY_FORMAT,
    EXPORT_FORMAT,
    INCLUSION_FORMAT,
    checkpoint_body,
    root_from_leaf_hashes,
)

__all__ = [
    "bundle_document",
    "consistency_document",
    "consistency_proof",
    "export_header",
    "export_line",
    "inclusion_document",
    "inclusion_proof",
    "jwks",
    "public_jwk",
    "root",
    "sign_checkpoint",
    "timestamp",
]


def _largest_power_of_two_below(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes], size: int) -> bytes:
    """MTH of the first `size` leaf hashes."""
    if not 0 <= size <= len(leaf_hashes):
        raise ValueError(f"tree size {size} out of range 0..{len(leaf_hashes)}")
    return root_from_leaf_hashes(leaf_hashes[:size])


def _path(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """RFC 9162 PATH(m, D[n])."""
    if len(leaves) <= 1:
        return []
    k = _largest_power_of_two_below(len(leaves))
    if index < k:
        return [*_path(index, leaves[:k]), root_from_leaf_hashes(leaves[k:])]
    return [*_path(index - k, leaves[k:]), root_from_leaf_hashes(leaves[:k])]


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    """RFC 9162 SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if whole else [root_from_leaf_hashes(leaves)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), root_from_leaf_hashes(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root_from_leaf_hashes(leaves[:k])]


def inclusion_proof(leaf_hashes: Sequence[bytes], index: int, tree_size: int) -> list[bytes]:
    """Audit path of leaf `index` in the tree of the first `tree_size` leaf hashes."""
    if not 0 <= index < tree_size <= len(leaf_hashes):
        raise ValueError(f"no leaf {index} in a tree of size {tree_size}")
    return _path(index, leaf_hashes[:tree_size])


def consistency_proof(leaf_hashes: Sequence[bytes], old_size: int, new_size: int) -> list[bytes]:
    """Proof that the tree of `new_size` leaves extends the one of `old_size` (0 < old)."""
    if not 0 < old_size <= new_size <= len(leaf_hashes):
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    return _subproof(old_size, leaf_hashes[:new_size], True)


def timestamp(when: datetime) -> str:
    """RFC 3339 UTC timestamp with second precision, e.g. 2026-11-29T09:00:00Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def b64url(raw: bytes) -> str:
    """Unpadded base64url."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_checkpoint(
    private_key: Ed25519PrivateKey,
    key_id: str,
    tenant_id: str,
    tree_size: int,
    root_hash: bytes,
    when: datetime | str,
) -> dict[str, Any]:
    """A signed checkpoint in its JSON representation."""
    stamp = when if isinstance(when, str) else timestamp(when)
    body = checkpoint_body(tenant_id, tree_size, root_hash, stamp)
    return {
        "tenant_id": tenant_id,
        "tree_size": tree_size,
        "root_hash": root_hash.hex(),
        "timestamp": stamp,
        "key_id": key_id,
        "signature": b64url(private_key.sign(body)),
    }


def public_jwk(key_id: str, public_key: Ed25519PublicKey) -> dict[str, str]:
    """The JWK of an Ed25519 public key."""
    return raw_jwk(key_id, public_key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def raw_jwk(key_id: str, raw: bytes) -> dict[str, str]:
    """The JWK (RFC 8037) of a raw 32-byte Ed25519 public key."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": key_id,
        "x": b64url(raw),
        "alg": "EdDSA",
        "use": "sig",
    }


def jwks(keys: Iterable[tuple[str, Ed25519PublicKey]]) -> dict[str, Any]:
    """A JWKS holding every (key id, public key): old keys stay so old checkpoints verify."""
    return {"keys": [public_jwk(kid, key) for kid, key in keys]}


def export_line(seq: int, entry: bytes, leaf: bytes, chain: bytes) -> str:
    """One export entry line, in the canonical layout the verifier's fast path reads."""
    b64 = base64.b64encode(entry).decode()
    return json.dumps(
        {"seq": seq, "entry": b64, "leaf_hash": leaf.hex(), "chain_hash": chain.hex()}
    )


def export_header(
    tenant_id: str, key_set: dict[str, Any], checkpoints: Sequence[dict[str, Any]]
) -> str:
    """The first line of an export (entry lines follow, from `export_line`)."""
    header = {"format": EXPORT_FORMAT, "tenant_id": tenant_id, "jwks": key_set}
    return json.dumps(header | {"checkpoints": list(checkpoints)})


def inclusion_document(
    leaf_hashes: Sequence[bytes],
    entry: bytes,
    index: int,
    checkpoint: dict[str, Any],
    key_set: dict[str, Any],
) -> dict[str, Any]:
    """An inclusion proof file for leaf `index` against `checkpoint`."""
    proof = inclusion_proof(leaf_hashes, index, checkpoint["tree_size"])
    return {
        "format": INCLUSION_FORMAT,
        "checkpoint": checkpoint,
        "jwks": key_set,
        "entry": base64.b64encode(entry).decode(),
        "leaf_index": index,
        "proof": [p.hex() for p in proof],
    }


def consistency_document(
    leaf_hashes: Sequence[bytes],
    old: dict[str, Any],
    new: dict[str, Any],
    key_set: dict[str, Any],
) -> dict[str, Any]:
    """A consistency proof file between two checkpoints of one tenant."""
    proof = consistency_proof(leaf_hashes, old["tree_size"], new["tree_size"])
    return {
        "format": CONSISTENCY_FORMAT,
        "old": old,
        "new": new,
        "jwks": key_set,
        "proof": [p.hex() for p in proof],
    }


def bundle_document(
    leaf_hashes: Sequence[bytes],
    subject_ref: str,
    entries: Iterable[tuple[int, bytes]],
    checkpoint: dict[str, Any],
    key_set: dict[str, Any],
) -> dict[str, Any]:
    """A subject's proof-of-consent bundle: their (seq, entry bytes) with inclusion proofs."""
    size = checkpoint["tree_size"]
    return {
        "format": BUNDLE_FORMAT,
        "tenant_id": checkpoint["tenant_id"],
        "subject_ref": subject_ref,
        "checkpoint": checkpoint,
        "jwks": key_set,
        "entries": [
            {
                "seq": seq,
                "entry": base64.b64encode(entry).decode(),
                "leaf_index": seq - 1,
                "inclusion_proof": [p.hex() for p in inclusion_proof(leaf_hashes, seq - 1, size)],
            }
            for seq, entry in entries
        ],
    }
