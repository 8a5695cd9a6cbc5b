"""An example consumer of the audit topic that verifies every tenant's chain as it reads.

    python -m consentry.audit.follower --bootstrap-servers 127.0.0.1:9092 \\
        --keys-url http://127.0.0.1:8002/v1/audit/keys

It needs no consentry service code: aiokafka to read, the generated protobuf classes to decode
`consentry.audit.v1.EntryAppended` / `CheckpointSigned`, and the standalone verifier's
primitives (`consentry_verify`: leaf and chain hashes, the RFC 6962 tree, checkpoint
signatures). Per tenant it checks that seqs follow without gaps, that each leaf hash is the
hash of the entry bytes, that each chain hash follows from the previous one, and that each
checkpoint is signed by a published key and matches the tree built so far. Delivery is at
least once: a seq seen before is skipped. A failure stops it with exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer

from consentry.audit.consentry_verify import (
    TreeBuilder,
    VerificationError,
    chain_hash,
    leaf_hash,
    verify_checkpoint,
)
from consentry.audit.v1 import audit_pb2

ENTRY_APPENDED = "consentry.audit.entry_appended.v1"
CHECKPOINT_SIGNED = "consentry.audit.checkpoint_signed.v1"
TOPIC = "consentry.audit.v1"


@dataclass
class _Chain:
    next_seq: int = 1
    previous: bytes = bytes(32)
    tree: TreeBuilder = field(default_factory=TreeBuilder)
    verified_sizes: set[int] = field(default_factory=set)


class ChainFollower:
    """Verifies the audit topic's events, tenant by tenant, in the order they arrive."""

    def __init__(self, load_keys: Callable[[], Any]) -> None:
        self._load_keys = load_keys
        self._keys: Any = {"keys": []}
        self._chains: dict[str, _Chain] = {}

    def handle(self, event_type: str, payload: bytes) -> str | None:
        """Check one event; return a line to report (a verified checkpoint) or None."""
        if event_type == ENTRY_APPENDED:
            self._entry(audit_pb2.EntryAppended.FromString(payload))
            return None
        if event_type == CHECKPOINT_SIGNED:
            return self._checkpoint(audit_pb2.CheckpointSigned.FromString(payload))
        return None  # an event type this follower does not know: not its business

    def _entry(self, message: audit_pb2.EntryAppended) -> None:
        chain = self._chains.setdefault(message.tenant_id, _Chain())
        if message.seq < chain.next_seq:
            return  # delivered again
        where = f"tenant {message.tenant_id} seq {message.seq}"
        if message.seq > chain.next_seq:
            raise VerificationError(f"{where}: gap, expected seq {chain.next_seq}")
        leaf = leaf_hash(message.entry)
        if leaf != message.leaf_hash:
            raise VerificationError(f"{where}: entry bytes do not match the leaf hash")
        if chain_hash(chain.previous, leaf) != message.chain_hash:
            raise VerificationError(f"{where}: chain hash does not follow the previous entry")
        chain.tree.append(leaf)
        chain.previous, chain.next_seq = message.chain_hash, chain.next_seq + 1

    def _checkpoint(self, message: audit_pb2.CheckpointSigned) -> str | None:
        chain = self._chains.setdefault(message.tenant_id, _Chain())
        checkpoint = {
            "tenant_id": message.tenant_id,
            "tree_size": message.tree_size,
            "root_hash": message.root_hash.hex(),
            "timestamp": message.timestamp,
            "key_id": message.key_id,
            "signature": base64.urlsafe_b64encode(message.signature).rstrip(b"=").decode(),
        }
        if not any(key.get("kid") == message.key_id for key in self._keys.get("keys", [])):
            self._keys = self._load_keys()  # a new key since we last looked (rotation)
        verify_checkpoint(checkpoint, self._keys)
        where = f"tenant {message.tenant_id} checkpoint at tree size {message.tree_size}"
        if message.tree_size in chain.verified_sizes:
            return None  # delivered again
        if message.tree_size != chain.tree.size:
            raise VerificationError(f"{where}: the follower's tree has {chain.tree.size} entries")
        if chain.tree.root() != message.root_hash:
            raise VerificationError(f"{where}: root does not match the entries received")
        chain.verified_sizes.add(message.tree_size)
        return f"OK {where}: {chain.tree.size} entries verified, signed by {message.key_id}"


def keys_from_url(url: str) -> Callable[[], Any]:
    """A loader for the JWKS at `url` (the audit API's `/v1/audit/keys`)."""

    def load() -> Any:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - operator's URL
            return json.load(response)

    return load


def _header(headers: Any, name: str) -> str:
    for key, value in headers or ():
        if key == name:
            return bytes(value).decode()
    return ""


async def follow(
    bootstrap: str, follower: ChainFollower, group: str, out: Any = sys.stdout
) -> None:
    """Read the audit topic from the beginning and verify it, forever."""
    consumer = AIOKafkaConsumer(
        TOPIC, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async for record in consumer:
            line = follower.handle(_header(record.headers, "ce_type"), record.value or b"")
            if line:
                print(line, file=out, flush=True)
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    """Command line: follow the topic until interrupted; exit 1 on the first failure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--keys-url", required=True, help="the audit API's /v1/audit/keys")
    parser.add_argument("--group", default=f"audit-follower-{uuid.uuid4().hex[:8]}")
    args = parser.parse_args(argv)
    follower = ChainFollower(keys_from_url(args.keys_url))
    try:
        asyncio.run(follow(args.bootstrap_servers, follower, args.group))
    except VerificationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
