"""The example audit-topic follower: verifies chains and checkpoints as they stream by."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from consentry.audit.chain.checkpoints import Signer
from consentry.audit.chain.hashing import GENESIS, chain_hash, leaf_hash
from consentry.audit.consentry_verify import (
    VerificationError,
    checkpoint_body,
    root_from_leaf_hashes,
)
from consentry.audit.follower import CHECKPOINT_SIGNED, ENTRY_APPENDED, ChainFollower
from consentry.audit.v1 import audit_pb2

TENANT = "00000000-0000-4000-8000-0000000000aa"
SIGNER = Signer.from_seed(hashlib.sha256(b"follower test").digest())
FORGER = Signer.from_seed(hashlib.sha256(b"someone else").digest())


def jwks() -> dict[str, Any]:
    x = base64.urlsafe_b64encode(SIGNER.public_key).rstrip(b"=").decode()
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "kid": SIGNER.key_id, "x": x}]}


def entries(count: int) -> list[audit_pb2.EntryAppended]:
    out, previous = [], GENESIS
    for seq in range(1, count + 1):
        entry = f"entry {seq}".encode()
        leaf = leaf_hash(entry)
        previous = chain_hash(previous, leaf)
        out.append(
            audit_pb2.EntryAppended(
                tenant_id=TENANT, seq=seq, entry=entry, leaf_hash=leaf, chain_hash=previous
            )
        )
    return out


def checkpoint(
    items: list[audit_pb2.EntryAppended], signer: Signer = SIGNER
) -> audit_pb2.CheckpointSigned:
    root = root_from_leaf_hashes([item.leaf_hash for item in items])
    stamp = "2026-11-29T10:00:00Z"
    signature = signer.private_key.sign(checkpoint_body(TENANT, len(items), root, stamp))
    return audit_pb2.CheckpointSigned(
        tenant_id=TENANT,
        tree_size=len(items),
        root_hash=root,
        timestamp=stamp,
        key_id=SIGNER.key_id,
        signature=signature,
    )


def feed(follower: ChainFollower, items: list[audit_pb2.EntryAppended]) -> None:
    for item in items:
        assert follower.handle(ENTRY_APPENDED, item.SerializeToString()) is None


def test_a_good_chain_and_its_checkpoint_verify_and_repeats_are_skipped() -> None:
    follower = ChainFollower(jwks)
    items = entries(7)
    feed(follower, items[:4])
    feed(follower, items[:2])  # redelivered
    feed(follower, items[4:])
    line = follower.handle(CHECKPOINT_SIGNED, checkpoint(items).SerializeToString())
    assert line == (
        f"OK tenant {TENANT} checkpoint at tree size 7: 7 entries verified,"
        f" signed by {SIGNER.key_id}"
    )
    assert follower.handle(CHECKPOINT_SIGNED, checkpoint(items).SerializeToString()) is None


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda items: items[:2] + items[3:], "seq 4: gap, expected seq 3"),
        (
            lambda items: [*items[:2], _edited(items[2]), *items[3:]],
            "seq 3: entry bytes do not match",
        ),
        (
            lambda items: [*items[:2], _relinked(items[2]), *items[3:]],
            "seq 3: chain hash does not follow",
        ),
    ],
)
def test_tampered_streams_stop_the_follower_naming_the_entry(tamper: Any, message: str) -> None:
    follower = ChainFollower(jwks)
    with pytest.raises(VerificationError, match=message):
        feed(follower, tamper(entries(5)))


def test_a_forged_or_mismatched_checkpoint_is_refused() -> None:
    follower = ChainFollower(jwks)
    items = entries(3)
    feed(follower, items)
    with pytest.raises(VerificationError, match="bad signature"):
        follower.handle(CHECKPOINT_SIGNED, checkpoint(items, FORGER).SerializeToString())
    with pytest.raises(VerificationError, match="the follower's tree has 3 entries"):
        follower.handle(CHECKPOINT_SIGNED, checkpoint(entries(4)).SerializeToString())


def _edited(item: audit_pb2.EntryAppended) -> audit_pb2.EntryAppended:
    changed = audit_pb2.EntryAppended()
    changed.CopyFrom(item)
    changed.entry = b"edited"
    return changed


def _relinked(item: audit_pb2.EntryAppended) -> audit_pb2.EntryAppended:
    changed = audit_pb2.EntryAppended()
    changed.CopyFrom(item)
    changed.chain_hash = bytes(32)
    return changed
