"""consentry-verify: offline verifier for consentry audit exports, proofs and consent bundles.

A single file that needs only the standard library and `cryptography` (Ed25519): copy it out
and run `python consentry_verify.py {export,inclusion,consistency,bundle} FILE [--jwks KEYS]`.
Formats: docs/audit-formats.md. Merkle trees follow RFC 9162 section 2.1 (RFC 6962 hashing).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

EXPORT_FORMAT = "consentry.audit.export.v1"
BUNDLE_FORMAT = "consentry.audit.bundle.v1"
INCLUSION_FORMAT = "consentry.audit.inclusion.v1"
CONSISTENCY_FORMAT = "consentry.audit.consistency.v1"
ORIGIN_PREFIX = "consentry.audit/"
GENESIS = bytes(32)
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha = hashlib.sha256
_a2b, _hexlify, _unhex = binascii.a2b_base64, binascii.b2a_hex, binascii.a2b_hex
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z\Z")
_HEX32 = re.compile(r"[0-9a-f]{64}\Z")
_LINE_END = ', "entry": "", "leaf_hash": "", "chain_hash": ""}\n'
_LINE_SEP = _LINE_END + '{"seq": '
_CHUNK = 1 << 18


class VerificationError(Exception):
    """Verification failed; the message names the entry or checkpoint concerned."""


class InputError(Exception):
    """The input cannot be read or is not a consentry audit file."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || entry)."""
    return _sha(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha(b"\x01" + left + right).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    """Hash chain link: SHA-256(previous chain hash || leaf hash)."""
    return _sha(previous + leaf).digest()


def _level_up(level: list[bytes]) -> list[bytes]:
    it = iter(level)
    return [_sha(b"\x01" + a + b).digest() for a, b in zip(it, it, strict=True)]


class TreeBuilder:
    """Compact range of a Merkle tree: append leaf hashes, get the root in O(log n)."""

    __slots__ = ("_begin", "_end", "_hashes", "_heights")

    def __init__(self, begin: int = 0) -> None:
        self._begin = self._end = begin
        self._heights: list[int] = []
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        """Index one past the last leaf appended (the tree size when begin is 0)."""
        return self._end

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        self.append_subtree(0, leaf)

    def append_subtree(self, height: int, node: bytes) -> None:
        """Append the root of a perfect subtree of 2**height leaves aligned at the end."""
        width, start = 1 << height, self._end
        if start & (width - 1):
            raise ValueError(f"subtree of height {height} is not aligned at {start}")
        self._end = start + width
        heights, hashes = self._heights, self._hashes
        while heights and heights[-1] == height and (start >> height) & 1:
            node = _sha(b"\x01" + hashes.pop() + node).digest()
            heights.pop()
            start -= width
            height, width = height + 1, width << 1
        heights.append(height)
        hashes.append(node)

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaf hashes, hashing aligned perfect subtrees level by level."""
        i, n = 0, len(leaves)
        while i < n:
            height, end = (n - i).bit_length() - 1, self._end
            if end:
                height = min(height, (end & -end).bit_length() - 1)
            level = list(leaves[i : i + (1 << height)])
            while len(level) > 1:
                level = _level_up(level)
            self.append_subtree(height, level[0])
            i += 1 << height

    def nodes(self) -> list[tuple[int, bytes]]:
        """The (height, hash) perfect subtrees covering the range, left to right."""
        return list(zip(self._heights, self._hashes, strict=True))

    def root(self) -> bytes:
        """Merkle tree hash of the leaves appended so far (requires begin 0)."""
        if self._begin:
            raise ValueError("root() needs a range that starts at leaf 0")
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for node in reversed(self._hashes[:-1]):
            root = _sha(b"\x01" + node + root).digest()
        return root


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (SHA-256 of the empty string for no leaves)."""
    tree = TreeBuilder()
    tree.extend(hashes)
    return tree.root()


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 2.1.3.2: does `proof` show leaf `index` of a tree of `tree_size` under `root`?"""
    if not 0 <= index < tree_size or len(leaf) != 32 or any(len(p) != 32 for p in proof):
        return False
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 2.1.4.2: is the tree of `new_size` an append-only extension of `old_size`?"""
    if old_size < 1 or new_size < old_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof or any(len(p) != 32 for p in proof):
        return False
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and fr == old_root and sr == new_root


@dataclass(frozen=True)
class Checkpoint:
    """A parsed (not yet verified) signed checkpoint."""

    tenant_id: str
    tree_size: int
    root_hash: bytes
    timestamp: str
    key_id: str
    signature: bytes

    def describe(self) -> str:
        """Short human description naming the checkpoint."""
        return f"checkpoint at tree size {self.tree_size} ({self.timestamp}, key {self.key_id})"


def checkpoint_body(tenant_id: str, tree_size: int, root_hash: bytes, timestamp: str) -> bytes:
    """The exact bytes an Ed25519 checkpoint signature covers."""
    root = base64.b64encode(root_hash).decode()
    return f"{ORIGIN_PREFIX}{tenant_id}\n{tree_size}\n{root}\n{timestamp}\n".encode()


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, rejecting any non-canonical spelling."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != text:
        raise ValueError("not canonical unpadded base64url")
    return raw


def parse_checkpoint(checkpoint: Any) -> Checkpoint:
    """Check a checkpoint's JSON shape and decode it; raise VerificationError if malformed."""
    try:
        c = checkpoint
        tenant, size, ts, kid = c["tenant_id"], c["tree_size"], c["timestamp"], c["key_id"]
        if not (isinstance(tenant, str) and tenant and "\n" not in tenant):
            raise ValueError("bad tenant_id")
        if type(size) is not int or size < 0:
            raise ValueError("bad tree_size")
        if not (isinstance(ts, str) and _TIME.match(ts)):
            raise ValueError("timestamp is not RFC 3339 UTC (...Z)")
        datetime.fromisoformat(ts)
        if not (isinstance(kid, str) and kid):
            raise ValueError("bad key_id")
        if not (isinstance(c["root_hash"], str) and _HEX32.match(c["root_hash"])):
            raise ValueError("root_hash is not 64 lowercase hex digits")
        sig = b64url_decode(c["signature"])
        if len(sig) != 64:
            raise ValueError("signature is not 64 bytes")
        return Checkpoint(tenant, size, bytes.fromhex(c["root_hash"]), ts, kid, sig)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise VerificationError(f"malformed checkpoint: {exc!s}") from None


def _public_key(jwks: Any, kid: str) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        keys = [k for k in jwks["keys"] if k["kid"] == kid]
        if len(keys) != 1:
            raise VerificationError(
                f"unknown key id {kid!r}" if not keys else f"key id {kid!r} appears twice"
            )
        key = keys[0]
        if (key["kty"], key["crv"], key.get("alg", "EdDSA"), key.get("use", "sig")) != (
            "OKP",
            "Ed25519",
            "EdDSA",
            "sig",
        ):
            raise ValueError("not an Ed25519 signing key")
        return Ed25519PublicKey.from_public_bytes(b64url_decode(key["x"]))
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise VerificationError(f"malformed JWKS entry for key id {kid!r}: {exc!s}") from None


def verify_checkpoint(checkpoint: Any, jwks: Any) -> None:
    """Verify a checkpoint's shape and Ed25519 signature against the JWKS key of its key id."""
    from cryptography.exceptions import InvalidSignature

    cp = parse_checkpoint(checkpoint)
    key = _public_key(jwks, cp.key_id)
    body = checkpoint_body(cp.tenant_id, cp.tree_size, cp.root_hash, cp.timestamp)
    try:
        key.verify(cp.signature, body)
    except InvalidSignature:
        raise VerificationError(f"{cp.describe()}: bad signature (forged or altered)") from None


def _checked(checkpoint: Any, jwks: Any, tenant_id: str) -> Checkpoint:
    verify_checkpoint(checkpoint, jwks)
    cp = parse_checkpoint(checkpoint)
    if cp.tenant_id != tenant_id:
        raise VerificationError(f"{cp.describe()} is for tenant {cp.tenant_id}, not {tenant_id}")
    return cp


# --- AuditEntry protobuf fields, read without the protobuf library -----------------------
_STRING_FIELDS = {1: "tenant_id", 2: "event_id", 3: "event_type", 4: "event_source"}
_STRING_FIELDS |= {5: "subject_ref", 7: "content_type", 9: "topic"}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            return value, i


def _wire_fields(data: bytes) -> dict[int, bytes | int]:
    fields: dict[int, bytes | int] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        value: bytes | int
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            length, i = _varint(data, i)
            value, i = data[i : i + length], i + length
        elif wire in (1, 5):
            value, i = 0, i + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if number == 0 or i > len(data):
            raise ValueError("truncated or invalid field")
        fields[number] = value
    return fields


def decode_audit_entry(entry: bytes) -> dict[str, str]:
    """The AuditEntry's string fields and event_time (RFC 3339); ValueError if malformed."""
    fields = _wire_fields(entry)
    out = dict.fromkeys(_STRING_FIELDS.values(), "")
    for number, name in _STRING_FIELDS.items():
        value = fields.get(number, b"")
        if not isinstance(value, bytes):
            raise ValueError(f"field {name} is not length-delimited")
        out[name] = value.decode()
    stamp = fields.get(6, b"")
    time = _wire_fields(stamp) if isinstance(stamp, bytes) else {}
    seconds, nanos = time.get(1, 0), time.get(2, 0)
    if isinstance(seconds, int) and isinstance(nanos, int) and seconds < 1 << 63:
        when = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        out["event_time"] = when + (f".{nanos:09d}".rstrip("0") if nanos else "") + "Z"
    return out


def _name(seq: int, entry: bytes | None) -> str:
    try:
        fields = decode_audit_entry(entry) if entry is not None else None
    except ValueError:
        fields = None
    return f"entry seq {seq}" + (
        f" (event {fields['event_id']}, {fields['event_type']})" if fields else ""
    )


# --- export: JSON Lines, a header then one entry per line ---------------------------------
def export_line(seq: int, entry: bytes, leaf: bytes, chain: bytes) -> str:
    """One export entry line in the canonical layout (the layout the fast path reads)."""
    b64 = base64.b64encode(entry).decode()
    return json.dumps(
        {"seq": seq, "entry": b64, "leaf_hash": leaf.hex(), "chain_hash": chain.hex()}
    )


def _fast_chunk(
    chunk: bytes, seq: int, prev: bytes | None
) -> tuple[list[bytes], list[bytes]] | None:
    """Leaf and stored chain hashes of canonical lines from `seq` on, or None if anything differs."""
    parts = chunk.split(b'"')
    n, rest = divmod(len(parts) - 1, 14)
    if rest or not n:
        return None
    b64s, leaf_hex, chain_hex = parts[5::14], parts[9::14], parts[13::14]
    parts[5::14] = parts[9::14] = parts[13::14] = [b""] * n
    numbers = _LINE_SEP.join(map(str, range(seq, seq + n)))
    if b'"'.join(parts) != f'{{"seq": {numbers}{_LINE_END}'.encode():
        return None
    try:
        leaves = [_sha(b"\x00" + _a2b(b, strict_mode=True)).digest() for b in b64s]
        chains = list(map(_unhex, chain_hex))
    except binascii.Error:
        return None
    if _hexlify(b"".join(leaves)) != b"".join(leaf_hex) or {*map(len, leaf_hex)} != {64}:
        return None
    if prev is None:
        links = [_sha(p + q).digest() for p, q in zip(chains, leaves[1:])]
        ok = links == chains[1:]
    else:
        ok = [_sha(p + q).digest() for p, q in zip([prev, *chains], leaves)] == chains
    return (leaves, chains) if ok else None


@dataclass
class _Segment:
    first_seq: int
    count: int
    first_leaf: bytes
    first_chain: bytes
    last_chain: bytes
    pieces: list[tuple[int, list[tuple[int, bytes]]]]


def _scan_segment(path: str, begin: int, end: int, cuts: Sequence[int]) -> _Segment | None:
    """Fast pass over whole lines in bytes [begin, end); None when the fast path cannot vouch."""
    seg: _Segment | None = None
    with open(path, "rb") as f:
        f.seek(begin)
        pos = begin
        while pos < end:
            chunk = f.read(min(_CHUNK, end - pos))
            if not chunk.endswith(b"\n"):
                chunk += f.readline()
            pos += len(chunk)
            if seg is None:
                head = chunk[:40].partition(b",")[0]
                if not head.startswith(b'{"seq": ') or not head[8:].isdigit():
                    return None
                seg = _Segment(int(head[8:]), 0, b"", b"", b"", [])
                tree, prev = TreeBuilder(seg.first_seq - 1), None
            got = _fast_chunk(chunk, seg.first_seq + seg.count, prev)
            if got is None:
                return None
            leaves, chains = got
            if not seg.count:
                seg.first_leaf, seg.first_chain = leaves[0], chains[0]
            seg.count += len(leaves)
            prev = seg.last_chain = chains[-1]
            for cut in cuts:
                if tree.size < cut <= tree.size + len(leaves):
                    head, leaves = leaves[: cut - tree.size], leaves[cut - tree.size :]
                    tree.extend(head)
                    seg.pieces.append((cut, tree.nodes()))
                    tree = TreeBuilder(cut)
            tree.extend(leaves)
    if seg is not None:
        seg.pieces.append((tree.size, tree.nodes()))
    return seg


@dataclass(frozen=True)
class ExportReport:
    """What a successful export verification established."""

    tenant_id: str
    entries: int
    checkpoints: int
    last_checkpoint: Checkpoint | None
    head_chain_hash: str
    keys_pinned: bool

    def summary(self) -> str:
        """One-line summary."""
        last = self.last_checkpoint
        covered = last.tree_size if last else 0
        text = f"tenant {self.tenant_id}: {self.entries} entries verified against "
        text += f"{self.checkpoints} signed checkpoints"
        text += f"; last verified {last.describe()}" if last else " (none covers any entry)"
        if self.entries > covered:
            text += f"; entries after seq {covered} are not yet covered by a checkpoint"
        keys = "pinned JWKS" if self.keys_pinned else "JWKS embedded in the export (unpinned)"
        return f"{text}; chain head {self.head_chain_hash}; keys: {keys}"


def _split(path: str, begin: int, end: int, parts: int) -> list[tuple[int, int]]:
    bounds = [begin]
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(begin + (end - begin) * k // parts - 1, bounds[-1]))
            f.readline()
            bounds.append(min(f.tell(), end))
    bounds.append(end)
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if a < b]


def _fast_export(
    path: str, begin: int, cps: dict[int, list[Checkpoint]], workers: int
) -> tuple[int, bytes] | None:
    end = os.path.getsize(path)
    ranges = _split(path, begin, end, workers)
    cuts = sorted(cps)
    jobs = [(path, a, b, cuts) for a, b in ranges]
    if len(jobs) > 1:
        method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
        with multiprocessing.get_context(method).Pool(len(jobs)) as pool:
            segments = pool.starmap(_scan_segment, jobs)
            pool.close()
            pool.join()
    else:
        segments = [_scan_segment(*job) for job in jobs]
    tree, prev, size = TreeBuilder(), GENESIS, 0
    for seg in segments:
        if seg is None or seg.first_seq != size + 1:
            return None
        if chain_hash(prev, seg.first_leaf) != seg.first_chain:
            return None
        for piece_end, nodes in seg.pieces:
            for height, node in nodes:
                tree.append_subtree(height, node)
            if tree.size != piece_end:
                return None
            if any(cp.root_hash != tree.root() for cp in cps.get(piece_end, ())):
                return None
        prev, size = seg.last_chain, size + seg.count
    if size < max(cps, default=0) or any(c.root_hash != EMPTY_ROOT for c in cps.get(0, ())):
        return None
    return size, prev


def _entry_record(raw: bytes, lineno: int) -> tuple[int, bytes, bytes, bytes]:
    try:
        rec = json.loads(raw)
        if not isinstance(rec, dict) or set(rec) != {"seq", "entry", "leaf_hash", "chain_hash"}:
            raise ValueError("not an entry record")
        seq, leaf, chain = rec["seq"], rec["leaf_hash"], rec["chain_hash"]
        if type(seq) is not int or not _HEX32.match(leaf) or not _HEX32.match(chain):
            raise ValueError("bad seq or hash")
        entry = _a2b(rec["entry"], strict_mode=True)
        return seq, entry, bytes.fromhex(leaf), bytes.fromhex(chain)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise VerificationError(f"line {lineno}: malformed entry record ({exc!s})") from None


def _check_roots(tree: TreeBuilder, cps: dict[int, list[Checkpoint]], good: int) -> int:
    for cp in cps.get(tree.size, ()):
        if cp.root_hash != tree.root():
            since = f"; entries up to seq {good} match the checkpoint at that size" if good else ""
            raise VerificationError(
                f"{cp.describe()} does not match the entries: an entry between seq {good + 1} "
                f"and seq {cp.tree_size} was changed, inserted, removed or reordered{since}"
            )
    return tree.size if tree.size in cps else good


def _sequential_export(
    lines: Iterator[bytes], cps: dict[int, list[Checkpoint]]
) -> tuple[int, bytes]:
    tree, prev, good = TreeBuilder(), GENESIS, _check_roots(TreeBuilder(), cps, 0)
    for lineno, raw in enumerate(lines, start=2):
        seq, entry, stored_leaf, stored_chain = _entry_record(raw, lineno)
        expected = tree.size + 1
        if seq > expected:
            raise VerificationError(
                f"entry seq {expected} is missing: line {lineno} holds seq {seq} "
                f"(entries {expected}..{seq - 1} deleted or moved)"
            )
        if seq < expected:
            raise VerificationError(
                f"line {lineno}: {_name(seq, entry)} is out of order or duplicated "
                f"(expected seq {expected})"
            )
        leaf = leaf_hash(entry)
        if leaf != stored_leaf:
            raise VerificationError(
                f"{_name(seq, entry)} was altered: its bytes do not match its stored leaf hash"
            )
        prev = chain_hash(prev, leaf)
        if prev != stored_chain:
            raise VerificationError(
                f"{_name(seq, entry)}: stored chain hash does not follow from the previous "
                "entry (chain altered, or an entry before it was removed or inserted)"
            )
        tree.append(leaf)
        good = _check_roots(tree, cps, good)
    for size in sorted(s for s in cps if s > tree.size):
        raise VerificationError(
            f"log truncated: {cps[size][0].describe()} covers {size} entries but the export "
            f"ends at seq {tree.size} (entries {tree.size + 1}..{size} are missing)"
        )
    return tree.size, prev


def _read_header(f: Any, path: str) -> dict[str, Any]:
    try:
        header = json.loads(f.readline())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: first line is not a JSON header ({exc!s})") from None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise InputError(f"{path}: not a {EXPORT_FORMAT} export")
    return header


def verify_export(
    path: str, *, jwks: Any = None, workers: int | None = None, fast: bool = True
) -> ExportReport:
    """Verify an export file: signatures, seq contiguity, hashes, chain and checkpoint roots."""
    with open(path, "rb") as f:
        header = _read_header(f, path)
        begin = f.tell()
    tenant, keys = header.get("tenant_id"), jwks if jwks is not None else header.get("jwks")
    if not isinstance(tenant, str) or not isinstance(header.get("checkpoints"), list):
        raise VerificationError("export header lacks tenant_id or checkpoints")
    cps: dict[int, list[Checkpoint]] = {}
    for raw in header["checkpoints"]:
        cp = _checked(raw, keys, tenant)
        cps.setdefault(cp.tree_size, []).append(cp)
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        workers = min(cores, 8) if os.path.getsize(path) - begin > 1 << 23 else 1
    done = _fast_export(path, begin, cps, max(workers, 1)) if fast else None
    if done is None:
        with open(path, "rb") as f:
            f.seek(begin)
            done = _sequential_export(iter(f), cps)
    count, head = done
    last = max(
        (c for group in cps.values() for c in group), key=lambda c: c.tree_size, default=None
    )
    n_cps = sum(map(len, cps.values()))
    return ExportReport(tenant, count, n_cps, last, head.hex(), jwks is not None)


# --- proof files and consent bundles ------------------------------------------------------
def _hashes(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list) or not all(
        isinstance(v, str) and _HEX32.match(v) for v in values
    ):
        raise VerificationError(f"{what} is not a list of 64-digit lowercase hex hashes")
    return [bytes.fromhex(v) for v in values]


def _entry_bytes(value: Any, what: str) -> bytes:
    try:
        return _a2b(value, strict_mode=True)
    except (TypeError, binascii.Error):
        raise VerificationError(f"{what}: entry is not base64") from None


def _keys(doc: Any, jwks: Any) -> tuple[Any, str]:
    return (jwks, "pinned JWKS") if jwks is not None else (doc.get("jwks"), "embedded JWKS")


def verify_inclusion_document(doc: Any, *, jwks: Any = None) -> str:
    """Verify an inclusion proof file; return the OK summary."""
    keys, origin = _keys(doc, jwks)
    cp = _checked(doc.get("checkpoint"), keys, str(doc.get("checkpoint", {}).get("tenant_id")))
    entry, index = _entry_bytes(doc.get("entry"), "inclusion"), doc.get("leaf_index")
    if type(index) is not int:
        raise VerificationError("leaf_index is not an integer")
    proof = _hashes(doc.get("proof"), "proof")
    if not verify_inclusion(leaf_hash(entry), index, cp.tree_size, proof, cp.root_hash):
        raise VerificationError(f"{_name(index + 1, entry)} is not included in {cp.describe()}")
    return f"{_name(index + 1, entry)} is included in {cp.describe()}; keys: {origin}"


def verify_consistency_document(doc: Any, *, jwks: Any = None) -> str:
    """Verify a consistency proof file; return the OK summary."""
    keys, origin = _keys(doc, jwks)
    old = _checked(doc.get("old"), keys, str(doc.get("old", {}).get("tenant_id")))
    new = _checked(doc.get("new"), keys, old.tenant_id)
    proof = _hashes(doc.get("proof"), "proof")
    if not verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, proof):
        raise VerificationError(f"{new.describe()} is not an extension of {old.describe()}")
    return f"{new.describe()} extends {old.describe()} (append-only); keys: {origin}"


def verify_bundle(doc: Any, *, jwks: Any = None) -> tuple[str, list[str]]:
    """Verify a proof-of-consent bundle; return the OK summary and one line per entry."""
    keys, origin = _keys(doc, jwks)
    tenant, subject = doc.get("tenant_id"), doc.get("subject_ref")
    if not isinstance(tenant, str) or not isinstance(subject, str):
        raise VerificationError("bundle lacks tenant_id or subject_ref")
    cp = _checked(doc.get("checkpoint"), keys, tenant)
    entries, lines, seen = doc.get("entries"), [], set()
    if not isinstance(entries, list) or not entries:
        raise VerificationError("bundle holds no entries")
    for item in entries:
        seq = item.get("seq") if isinstance(item, dict) else None
        if type(seq) is not int or seq < 1 or item.get("leaf_index") != seq - 1 or seq in seen:
            raise VerificationError(f"bundle entry {seq!r}: bad or repeated seq/leaf_index")
        seen.add(seq)
        entry = _entry_bytes(item.get("entry"), f"entry seq {seq}")
        proof = _hashes(item.get("inclusion_proof"), f"entry seq {seq} inclusion_proof")
        if not verify_inclusion(leaf_hash(entry), seq - 1, cp.tree_size, proof, cp.root_hash):
            raise VerificationError(f"{_name(seq, entry)} is not included in {cp.describe()}")
        try:
            fields = decode_audit_entry(entry)
        except ValueError as exc:
            raise VerificationError(f"entry seq {seq} is not an AuditEntry: {exc!s}") from None
        if fields["subject_ref"] != subject or fields["tenant_id"] != tenant:
            raise VerificationError(
                f"{_name(seq, entry)} belongs to subject {fields['subject_ref']!r} of tenant "
                f"{fields['tenant_id']}, not subject {subject!r}"
            )
        lines.append(
            f"seq {seq}: {fields['event_type']} event {fields['event_id']} "
            f"at {fields.get('event_time', '?')} from {fields['event_source']}"
        )
    summary = f"subject {subject} of tenant {tenant}: {len(lines)} entries included in "
    return summary + f"{cp.describe()}; keys: {origin}", lines


# --- command line -------------------------------------------------------------------------
def _load_json(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc!s}") from None


def _document(path: str, fmt: str) -> Any:
    doc = _load_json(path)
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise InputError(f"{path}: not a {fmt} file")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: 0 verified, 1 verification failed, 2 unreadable input."""
    parser = argparse.ArgumentParser(prog="consentry-verify", description=__doc__)
    parser.add_argument("kind", choices=["export", "inclusion", "consistency", "bundle"])
    parser.add_argument("file")
    parser.add_argument("--jwks", help="trusted JWKS file (pins keys; default: embedded keys)")
    parser.add_argument("--workers", type=int, help="processes for export (default: auto)")
    args = parser.parse_args(argv)
    try:
        jwks = _load_json(args.jwks) if args.jwks else None
        details: list[str] = []
        if args.kind == "export":
            summary = verify_export(args.file, jwks=jwks, workers=args.workers).summary()
        elif args.kind == "inclusion":
            summary = verify_inclusion_document(_document(args.file, INCLUSION_FORMAT), jwks=jwks)
        elif args.kind == "consistency":
            doc = _document(args.file, CONSISTENCY_FORMAT)
            summary = verify_consistency_document(doc, jwks=jwks)
        else:
            summary, details = verify_bundle(_document(args.file, BUNDLE_FORMAT), jwks=jwks)
    except (InputError, OSError) as exc:
        print(f"ERROR: {exc!s}", file=sys.stderr)
        return 2
    except VerificationError as exc:
        print(f"FAILED: {exc!s}")
        return 1
    print(f"OK {args.kind}: {summary}")
    for line in details:
        print(f"  {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
