"""Leaf and chain hashes (RFC 6962 leaf prefix), computed the same way as audit_append()."""

from __future__ import annotations

import hashlib

GENESIS = bytes(32)


def leaf_hash(entry: bytes) -> bytes:
    """SHA-256(0x00 || entry)."""
    return hashlib.sha256(b"\x00" + entry).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    """SHA-256(previous chain hash || leaf hash)."""
    return hashlib.sha256(previous + leaf).digest()
