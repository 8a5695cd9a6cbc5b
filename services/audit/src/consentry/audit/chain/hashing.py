"""Leaf and chain hashes, computed the same way as audit_append().

The definitions live in the standalone verifier (`consentry_verify`), the one source of truth
an auditor can read on its own; the service uses them from there.
"""

from __future__ import annotations

from consentry.audit.consentry_verify import GENESIS, chain_hash, leaf_hash

__all__ = ["GENESIS", "chain_hash", "leaf_hash"]
