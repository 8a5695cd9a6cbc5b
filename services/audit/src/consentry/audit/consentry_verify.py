"""consentry-verify: offline verifier for consentry audit exports, proofs and consent bundles.

One file needing only the standard library and `cryptography` (Ed25519): copy it anywhere and
run `python consentry_verify.py {export,inclusion,consistency,bundle} FILE [--jwks KEYS]`.
Formats: docs/audit-formats.md. Merkle trees follow RFC 9162 section 2.1 (RFC 6962 hashes).
It is deliberately one file, longer than our usual ~400 lines: an auditor must be able to read
and run it alone. The service imports its hashes and checkpoint body from here (one definition).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import contextlib
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

EXPORT_FORMAT = "consentry.audit.export.v1"
BUNDLE_FORMAT = "consentry.audit.bundle.v1"
INCLUSION_FORMAT = "consentry.audit.inclusion.v1"
CONSISTENCY_FORMAT = "consentry.audit.consistency.v1"
GENESIS = bytes(32)
EMPTY_ROOT = hashlib.sha256(b"").digest()
_sha, _a2b = hashlib.sha256, binascii.a2b_base64
_hexlify, _unhex = binascii.b2a_hex, binascii.a2b_hex
_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z\Z")
_HEX32 = re.compile(r"[0-9a-f]{64}\Z")
_LINE_END = ', "entry": "", "leaf_hash": "", "chain_hash": ""}\n'
_CHUNK = 1 << 18
_BAD = (KeyError, TypeError, ValueError, AttributeError, binascii.Error)
Checkpoints = dict[int, list["Checkpoint"]]
# verify_export's progress callback: (bytes of entries checked, bytes of entries in all).
Progress = Callable[[int, int], None]
# With a progress callback, segments per worker process (each reported when scanned).
_PROGRESS_SEGMENTS = 8


class VerificationError(Exception):
    """Verification failed; the message names the entry or checkpoint concerned."""


class InputError(Exception):
    """The input cannot be read or is not a consentry audit file."""


def _require(condition: object, message: str) -> None:
    if not condition:
        raise ValueError(message)


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || entry)."""
    return _sha(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha(b"\x01" + left + right).digest()


def chain_hash(previous: bytes, leaf: bytes) -> bytes:
    """Hash-chain link: SHA-256(previous chain hash || leaf hash)."""
    return _sha(previous + leaf).digest()


class TreeBuilder:
    """Compact range of a Merkle tree: append leaf hashes, get the root in O(log n)."""

    __slots__ = ("_begin", "_end", "_hashes", "_heights")

    def __init__(self, begin: int = 0) -> None:
        self._begin = self._end = begin
        self._heights: list[int] = []
        self._hashes: list[bytes] = []

    @property
    def size(self) -> int:
        """Index one past the last leaf (the tree size when the range starts at 0)."""
        return self._end

    def append(self, leaf: bytes) -> None:
        """Append one leaf hash."""
        self.append_subtree(0, leaf)

    def append_subtree(self, height: int, node: bytes) -> None:
        """Append the root of a perfect subtree of 2**height leaves starting at `size`."""
        width, start = 1 << height, self._end
        if start & (width - 1):
            raise ValueError(f"subtree of height {height} is not aligned at {start}")
        self._end = start + width
        while self._heights and self._heights[-1] == height and (start >> height) & 1:
            node = _sha(b"\x01" + self._hashes.pop() + node).digest()
            self._heights.pop()
            start, height, width = start - width, height + 1, width << 1
        self._heights.append(height)
        self._hashes.append(node)

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaf hashes, hashing aligned perfect subtrees level by level."""
        i = 0
        while i < len(leaves):
            height, end = (len(leaves) - i).bit_length() - 1, self._end
            if end:
                height = min(height, (end & -end).bit_length() - 1)
            level = list(leaves[i : i + (1 << height)])
            while len(level) > 1:
                data = b"".join(level)
                level = [_sha(b"\x01" + data[j : j + 64]).digest() for j in range(0, len(data), 64)]
            self.append_subtree(height, level[0])
            i += 1 << height

    def nodes(self) -> list[tuple[int, bytes]]:
        """The (height, hash) perfect subtrees covering the range, left to right."""
        return list(zip(self._heights, self._hashes, strict=True))

    def root(self) -> bytes:
        """Merkle tree hash of the leaves so far (only for a range starting at leaf 0)."""
        if self._begin:
            raise ValueError("root() needs a range that starts at leaf 0")
        root = self._hashes[-1] if self._hashes else EMPTY_ROOT
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
    """RFC 9162 2.1.3.2: does `proof` put `leaf` at `index` of the tree of `root`?"""
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
    """A parsed signed checkpoint."""

    tenant_id: str
    tree_size: int
    root_hash: bytes
    timestamp: str
    key_id: str
    signature: bytes

    def describe(self) -> str:
        """How messages name the checkpoint."""
        return f"checkpoint at tree size {self.tree_size} ({self.timestamp}, key {self.key_id})"


def checkpoint_body(tenant_id: str, tree_size: int, root_hash: bytes, timestamp: str) -> bytes:
    """The exact bytes a checkpoint's Ed25519 signature covers."""
    root = base64.b64encode(root_hash).decode()
    return f"consentry.audit/{tenant_id}\n{tree_size}\n{root}\n{timestamp}\n".encode()


def b64url_decode(text: str) -> bytes:
    """Decode unpadded base64url, rejecting any other spelling."""
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    _require(base64.urlsafe_b64encode(raw).rstrip(b"=").decode() == text, "bad base64url")
    return raw


def parse_checkpoint(checkpoint: Any) -> Checkpoint:
    """Check a checkpoint's JSON shape and decode it; VerificationError if malformed."""
    try:
        c, tenant, size, stamp = checkpoint, checkpoint["tenant_id"], None, None
        _require(isinstance(tenant, str) and tenant and "\n" not in tenant, "bad tenant_id")
        size, stamp, kid = c["tree_size"], c["timestamp"], c["key_id"]
        _require(type(size) is int and size >= 0, "bad tree_size")
        _require(isinstance(stamp, str) and _TIME.match(stamp), "timestamp is not RFC 3339 ...Z")
        datetime.fromisoformat(stamp)
        _require(isinstance(kid, str) and kid, "bad key_id")
        _require(_HEX32.match(c["root_hash"]), "root_hash is not 64 lowercase hex digits")
        signature = b64url_decode(c["signature"])
        _require(len(signature) == 64, "signature is not 64 bytes")
        return Checkpoint(tenant, size, bytes.fromhex(c["root_hash"]), stamp, kid, signature)
    except _BAD as exc:
        where = f" at tree size {size}" if size is not None else ""
        raise VerificationError(f"malformed checkpoint{where}: {exc!s}") from None


def verify_checkpoint(checkpoint: Any, jwks: Any) -> None:
    """Verify a checkpoint's shape and Ed25519 signature with the JWKS key of its key id."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    cp = parse_checkpoint(checkpoint)
    body = checkpoint_body(cp.tenant_id, cp.tree_size, cp.root_hash, cp.timestamp)
    try:
        keys = [k for k in jwks["keys"] if k["kid"] == cp.key_id]
        _require(keys, "unknown key id")
        _require(len(keys) == 1, "key id listed twice in the JWKS")
        kind = (keys[0]["kty"], keys[0]["crv"], keys[0].get("alg", "EdDSA"), keys[0].get("use"))
        _require(
            kind in {("OKP", "Ed25519", "EdDSA", u) for u in ("sig", None)}, "not an Ed25519 key"
        )
        Ed25519PublicKey.from_public_bytes(b64url_decode(keys[0]["x"])).verify(cp.signature, body)
    except InvalidSignature:
        raise VerificationError(f"{cp.describe()}: bad signature (forged or altered)") from None
    except _BAD as exc:
        detail = exc if type(exc) is ValueError else f"bad JWKS ({exc!r})"
        raise VerificationError(f"{cp.describe()}: {detail}") from None


def _checked(checkpoint: Any, jwks: Any, tenant_id: str | None = None) -> Checkpoint:
    verify_checkpoint(checkpoint, jwks)
    cp = parse_checkpoint(checkpoint)
    if tenant_id is not None and cp.tenant_id != tenant_id:
        raise VerificationError(f"{cp.describe()} is for tenant {cp.tenant_id}, not {tenant_id}")
    return cp


# --- AuditEntry fields, read with a tiny protobuf wire-format reader ---------------------
_FIELDS = {1: "tenant_id", 2: "event_id", 3: "event_type", 4: "event_source", 5: "subject_ref"}
_FIELDS |= {7: "content_type", 9: "topic"}


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        _require(i < len(data) and shift < 64, "truncated varint")
        value, i, shift = value | (data[i] & 0x7F) << shift, i + 1, shift + 7
        if not data[i - 1] & 0x80:
            return value, i


def _wire_fields(data: bytes) -> dict[int, bytes | int]:
    fields: dict[int, bytes | int] = {}
    i = 0
    while i < len(data):
        key, i = _varint(data, i)
        value: bytes | int = 0
        if key & 7 == 0:
            value, i = _varint(data, i)
        elif key & 7 == 2:
            length, i = _varint(data, i)
            value, i = data[i : i + length], i + length
        else:
            _require(key & 7 in (1, 5), f"unsupported wire type {key & 7}")
            i += 8 if key & 7 == 1 else 4
        _require(key >> 3 and i <= len(data), "truncated or invalid field")
        fields[key >> 3] = value
    return fields


def decode_audit_entry(entry: bytes) -> dict[str, str]:
    """An AuditEntry's string fields and event_time (RFC 3339); ValueError if malformed."""
    fields, out = _wire_fields(entry), {}
    for number, name in _FIELDS.items():
        value = fields.get(number, b"")
        _require(isinstance(value, bytes), f"{name} is not a string")
        out[name] = value.decode() if isinstance(value, bytes) else ""
    stamp = fields.get(6, b"")
    time = _wire_fields(stamp) if isinstance(stamp, bytes) else {}
    seconds, nanos = time.get(1, 0), time.get(2, 0)
    if isinstance(seconds, int) and isinstance(nanos, int) and 0 <= nanos < 10**9:
        with contextlib.suppress(OverflowError, OSError, ValueError):
            when = datetime.fromtimestamp(seconds - (seconds >> 63 << 64), UTC)
            fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
            out["event_time"] = f"{when:%Y-%m-%dT%H:%M:%S}{fraction}Z"
    return out


def _name(seq: int, entry: bytes) -> str:
    try:
        fields = decode_audit_entry(entry)
        return f"entry seq {seq} (event {fields['event_id']}, {fields['event_type']})"
    except ValueError:
        return f"entry seq {seq}"


# --- export: a JSON header line, then one canonical JSON line per entry -------------------
def _fast_chunk(chunk: bytes, seq: int, prev: bytes | None) -> tuple[list[bytes], list[bytes]]:
    """Leaf and chain hashes of canonical lines numbered from `seq`; ValueError on any doubt."""
    parts = chunk.split(b'"')
    n, rest = divmod(len(parts) - 1, 14)
    _require(n and not rest, "not canonical")
    b64s, leaf_hex, chain_hex = parts[5::14], parts[9::14], parts[13::14]
    parts[5::14] = parts[9::14] = parts[13::14] = [b""] * n
    numbers = (_LINE_END + '{"seq": ').join(map(str, range(seq, seq + n)))
    _require(b'"'.join(parts) == f'{{"seq": {numbers}{_LINE_END}'.encode(), "not canonical")
    leaves = [_sha(b"\x00" + _a2b(b, strict_mode=True)).digest() for b in b64s]
    chains = list(map(_unhex, chain_hex))
    _require(_hexlify(b"".join(leaves)) == b"".join(leaf_hex), "leaf hash differs")
    _require({*map(len, leaf_hex)} == {64}, "not canonical")
    _require(_hexlify(b"".join(chains)) == b"".join(chain_hex), "not canonical")
    prevs = [prev or GENESIS, *chains[:-1]]  # without `prev`, main checks the first link
    links = [_sha(p + q).digest() for p, q in zip(prevs, leaves, strict=True)]
    _require(links[prev is None :] == chains[prev is None :], "chain differs")
    return leaves, chains


Segment = tuple[int, int, bytes, bytes, bytes, list[tuple[int, list[tuple[int, bytes]]]]]


def _scan_segment(path: str, begin: int, end: int, cuts: Sequence[int]) -> Segment | None:
    """Fast pass over the whole lines in bytes [begin, end); None unless all is canonical.

    Returns the first seq, the entry count, the first leaf and stored chain hash (main checks
    that link), the last chain hash and the tree nodes of each range ending at a checkpoint.
    """
    pieces: list[tuple[int, list[tuple[int, bytes]]]] = []
    first, count, prev, firsts, tree = 0, 0, None, (b"", b""), None
    with open(path, "rb") as f, contextlib.suppress(*_BAD):
        f.seek(pos := begin)
        while pos < end:
            chunk = f.read(min(_CHUNK, end - pos))
            chunk += f.readline() if not chunk.endswith(b"\n") else b""
            pos += len(chunk)
            if tree is None:
                first = int(chunk[:40].partition(b",")[0].removeprefix(b'{"seq": '))
                tree = TreeBuilder(first - 1)
            leaves, chains = _fast_chunk(chunk, first + count, prev)
            firsts = firsts if count else (leaves[0], chains[0])
            count, prev = count + len(leaves), chains[-1]
            lo, hi = (bisect.bisect_right(cuts, tree.size + k) for k in (0, len(leaves)))
            for cut in cuts[lo:hi]:
                head, leaves = leaves[: cut - tree.size], leaves[cut - tree.size :]
                tree.extend(head)
                pieces.append((cut, tree.nodes()))
                tree = TreeBuilder(cut)
            tree.extend(leaves)
        if prev is not None and tree is not None:
            return first, count, *firsts, prev, [*pieces, (tree.size, tree.nodes())]
    return None


def _fast_export(
    path: str, begin: int, cps: Checkpoints, workers: int, progress: Progress | None = None
) -> tuple[int, bytes] | None:
    """Verify a canonical export in parallel; None means: run the exact sequential check.
    With `progress`, the file is cut in more segments than workers (8 per worker), reported
    as each is scanned."""
    end, bounds = os.path.getsize(path), [begin]
    parts = workers * _PROGRESS_SEGMENTS if progress is not None else workers
    with open(path, "rb") as f:
        for k in range(1, parts):
            f.seek(max(begin + (end - begin) * k // parts - 1, bounds[-1]))
            f.readline()
            bounds.append(min(f.tell(), end))
    bounds.append(end)
    jobs = [(path, a, b, sorted(cps)) for a, b in itertools.pairwise(bounds) if a < b]
    segments: list[Segment | None] = []
    if workers > 1 and len(jobs) > 1:
        method = "fork" if threading.active_count() == 1 and os.name == "posix" else "spawn"
        with multiprocessing.get_context(method).Pool(min(workers, len(jobs))) as pool:
            for (_, _, job_end, _), seg in zip(
                jobs, pool.imap(_scan_job, jobs), strict=True
            ):  # in order
                segments.append(seg)
                if progress is not None:
                    progress(job_end - begin, end - begin)
    else:
        for job in jobs:
            segments.append(_scan_segment(*job))
            if progress is not None:
                progress(job[2] - begin, end - begin)
    tree, prev = TreeBuilder(), GENESIS
    for seg in segments:
        if seg is None or seg[0] != tree.size + 1 or chain_hash(prev, seg[2]) != seg[3]:
            return None
        for piece_end, nodes in seg[5]:
            for height, node in nodes:
                tree.append_subtree(height, node)
            roots = {c.root_hash for c in cps.get(piece_end, ())}
            if tree.size != piece_end or roots - {tree.root()}:
                return None
        prev = seg[4]
    if tree.size < max(cps, default=0) or {c.root_hash for c in cps.get(0, ())} - {EMPTY_ROOT}:
        return None
    return tree.size, prev


def _scan_job(job: tuple[str, int, int, Sequence[int]]) -> Segment | None:
    return _scan_segment(*job)


def _record(raw: bytes, lineno: int) -> tuple[int, bytes, bytes, bytes]:
    try:
        rec = json.loads(raw)
        _require(set(rec) == {"seq", "entry", "leaf_hash", "chain_hash"}, "unexpected fields")
        seq, leaf, chain = rec["seq"], rec["leaf_hash"], rec["chain_hash"]
        _require(type(seq) is int and _HEX32.match(leaf) and _HEX32.match(chain), "bad value")
        return seq, _a2b(rec["entry"], strict_mode=True), bytes.fromhex(leaf), bytes.fromhex(chain)
    except _BAD as exc:
        raise VerificationError(f"line {lineno}: malformed entry record ({exc!s})") from None


def _check_roots(tree: TreeBuilder, cps: Checkpoints, good: int) -> int:
    for cp in cps.get(tree.size, ()):
        if cp.root_hash != tree.root():
            since = f"; entries up to seq {good} match the checkpoint at that size" if good else ""
            raise VerificationError(
                f"{cp.describe()} does not match the entries: an entry between seq {good + 1} "
                f"and seq {cp.tree_size} was changed, inserted, removed or reordered{since}"
            )
    return tree.size if tree.size in cps else good


def _sequential_export(lines: Iterable[bytes], cps: Checkpoints) -> tuple[int, bytes]:
    """The reference check, entry by entry: names the first entry or checkpoint that fails."""
    tree, prev, good = TreeBuilder(), GENESIS, _check_roots(TreeBuilder(), cps, 0)
    for lineno, raw in enumerate(lines, start=2):
        seq, entry, stored_leaf, stored_chain = _record(raw, lineno)
        expected, leaf = tree.size + 1, leaf_hash(entry)
        if seq > expected:
            gone = f"entry {expected}" if seq == expected + 1 else f"entries {expected}..{seq - 1}"
            raise VerificationError(
                f"entry seq {expected} is missing: line {lineno} holds seq {seq} "
                f"({gone} deleted or moved)"
            )
        if seq < expected:
            raise VerificationError(
                f"line {lineno}: {_name(seq, entry)} is out of order or duplicated "
                f"(expected seq {expected})"
            )
        if leaf != stored_leaf:
            raise VerificationError(
                f"{_name(seq, entry)} was altered: its bytes do not match its stored leaf hash"
            )
        prev = chain_hash(prev, leaf)
        if prev != stored_chain:
            raise VerificationError(
                f"{_name(seq, entry)}: its stored chain hash does not follow from the previous "
                "entry (chain altered, or an entry before it removed or inserted)"
            )
        tree.append(leaf)
        good = _check_roots(tree, cps, good)
    for size in sorted(s for s in cps if s > tree.size):
        raise VerificationError(
            f"log truncated: {cps[size][0].describe()} covers {size} entries but the export "
            f"ends at seq {tree.size} (entries {tree.size + 1}..{size} are missing)"
        )
    return tree.size, prev


@dataclass(frozen=True)
class ExportReport:
    """What a successful export verification established."""

    tenant_id: str
    entries: int
    checkpoints: int
    last_checkpoint: Checkpoint | None
    head_chain_hash: str
    keys: str

    def summary(self) -> str:
        """One-line summary."""
        last, text = self.last_checkpoint, f"tenant {self.tenant_id}: {self.entries} entries "
        text += f"verified against {self.checkpoints} signed checkpoints"
        text += f"; last verified {last.describe()}" if last else " (none covers any entry)"
        if self.entries > (covered := last.tree_size if last else 0):
            text += f"; entries after seq {covered} are not yet covered by a checkpoint"
        return f"{text}; chain head {self.head_chain_hash}; keys: {self.keys}"


def verify_export(
    path: str,
    *,
    jwks: Any = None,
    workers: int | None = None,
    fast: bool = True,
    progress: Progress | None = None,
) -> ExportReport:
    """Verify an export: checkpoint signatures, seq contiguity, hashes, chain, checkpoint roots.
    `progress(done, total)` is told the bytes of entries checked so far (for a progress bar)."""
    with open(path, "rb") as f:
        try:
            header = json.loads(f.readline())
        except ValueError as exc:
            raise InputError(f"{path}: first line is not a JSON header ({exc!s})") from None
        begin = f.tell()
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise InputError(f"{path}: not a {EXPORT_FORMAT} export")
    tenant, raw_cps = header.get("tenant_id"), header.get("checkpoints")
    if not isinstance(tenant, str) or not isinstance(raw_cps, list):
        raise VerificationError("the export header lacks tenant_id or checkpoints")
    keys, origin = _keys(header, jwks)
    cps: Checkpoints = {}
    for raw in raw_cps:
        cp = _checked(raw, keys, tenant)
        cps.setdefault(cp.tree_size, []).append(cp)
    if workers is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        workers = min(cores, 8) if os.path.getsize(path) - begin > 1 << 23 else 1
    done = _fast_export(path, begin, cps, max(workers, 1), progress) if fast else None
    if done is None:
        with open(path, "rb") as f:
            f.seek(begin)
            done = _sequential_export(f, cps)
        if progress is not None:
            total = os.path.getsize(path) - begin
            progress(total, total)
    last = max(
        (c for group in cps.values() for c in group), key=lambda c: c.tree_size, default=None
    )
    count = sum(map(len, cps.values()))
    return ExportReport(tenant, done[0], count, last, done[1].hex(), origin)


# --- proof files and proof-of-consent bundles ---------------------------------------------
def _keys(doc: dict[str, Any], jwks: Any) -> tuple[Any, str]:
    if jwks is not None:
        return jwks, "pinned JWKS"
    return doc.get("jwks"), "embedded JWKS (unpinned)"


def _hashes(values: Any) -> list[bytes]:
    _require(all(isinstance(v, str) and _HEX32.match(v) for v in values), "bad proof hash")
    return [bytes.fromhex(v) for v in values]


def _proven(item: dict[str, Any], key: str, cp: Checkpoint, index: Any) -> tuple[int, bytes]:
    """Decode an entry and check its inclusion proof against the checkpoint."""
    try:
        _require(type(index) is int, "leaf index is not an integer")
        entry, proof = _a2b(item["entry"], strict_mode=True), _hashes(item[key])
    except _BAD as exc:
        raise VerificationError(f"malformed entry or proof at leaf index {index}: {exc}") from None
    if not verify_inclusion(leaf_hash(entry), index, cp.tree_size, proof, cp.root_hash):
        raise VerificationError(f"{_name(index + 1, entry)} is not included in {cp.describe()}")
    return index + 1, entry


def verify_inclusion_document(doc: dict[str, Any], *, jwks: Any = None) -> str:
    """Verify an inclusion proof file; return its summary."""
    keys, origin = _keys(doc, jwks)
    cp = _checked(doc.get("checkpoint"), keys)
    seq, entry = _proven(doc, "proof", cp, doc.get("leaf_index"))
    return f"{_name(seq, entry)} is included in {cp.describe()}; keys: {origin}"


def verify_consistency_document(doc: dict[str, Any], *, jwks: Any = None) -> str:
    """Verify a consistency proof file; return its summary."""
    keys, origin = _keys(doc, jwks)
    old = _checked(doc.get("old"), keys)
    new = _checked(doc.get("new"), keys, old.tenant_id)
    try:
        hashes = _hashes(doc["proof"])
    except _BAD:
        raise VerificationError("malformed consistency proof") from None
    if not verify_consistency(old.tree_size, new.tree_size, old.root_hash, new.root_hash, hashes):
        raise VerificationError(f"{new.describe()} is not an extension of {old.describe()}")
    return f"{new.describe()} extends {old.describe()} (append-only); keys: {origin}"


def verify_bundle(doc: dict[str, Any], *, jwks: Any = None) -> tuple[str, list[str]]:
    """Verify a proof-of-consent bundle; return its summary and one line per entry."""
    keys, origin = _keys(doc, jwks)
    tenant, subject, items = doc.get("tenant_id"), doc.get("subject_ref"), doc.get("entries")
    if not isinstance(tenant, str) or not isinstance(subject, str) or not isinstance(items, list):
        raise VerificationError("the bundle lacks tenant_id, subject_ref or entries")
    cp, lines, seen = _checked(doc.get("checkpoint"), keys, tenant), [], set()
    for item in items or [None]:
        if not isinstance(item, dict):
            raise VerificationError("the bundle holds no entries" if not items else "bad entry")
        seq = item.get("seq")
        if type(seq) is not int or item.get("leaf_index") != seq - 1 or seq in seen:
            raise VerificationError(f"bundle entry seq {seq!r}: bad or repeated seq")
        seq, entry = _proven(item, "inclusion_proof", cp, seq - 1)
        seen.add(seq)
        try:
            f = decode_audit_entry(entry)
        except ValueError as exc:
            raise VerificationError(f"entry seq {seq} is not an AuditEntry: {exc!s}") from None
        if (f["tenant_id"], f["subject_ref"]) != (tenant, subject):
            raise VerificationError(
                f"{_name(seq, entry)} belongs to subject {f['subject_ref']!r} of tenant "
                f"{f['tenant_id']}, not to subject {subject!r}"
            )
        when = f.get("event_time", "?")
        lines.append(
            f"seq {seq}: {f['event_type']} event {f['event_id']} at {when} from {f['event_source']}"
        )
    summary = f"subject {subject} of tenant {tenant}: {len(lines)} entries included in "
    return f"{summary}{cp.describe()}; keys: {origin}", lines


# --- command line -------------------------------------------------------------------------
def _load(path: str, fmt: str | None = None) -> Any:
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if fmt and (not isinstance(doc, dict) or doc.get("format") != fmt):
        raise InputError(f"{path} is not a {fmt} file")
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: exit 0 verified, 1 verification failed, 2 unreadable input."""
    parser = argparse.ArgumentParser(prog="consentry-verify", description=__doc__)
    parser.add_argument("kind", choices=["export", "inclusion", "consistency", "bundle"])
    parser.add_argument("file")
    parser.add_argument("--jwks", help="trusted JWKS file (pins the keys; default: embedded)")
    parser.add_argument("--workers", type=int, help="processes for export (default: auto)")
    args = parser.parse_args(argv)
    details: list[str] = []
    try:
        jwks = _load(args.jwks) if args.jwks else None
        if args.kind == "export":
            summary = verify_export(args.file, jwks=jwks, workers=args.workers).summary()
        elif args.kind == "inclusion":
            summary = verify_inclusion_document(_load(args.file, INCLUSION_FORMAT), jwks=jwks)
        elif args.kind == "consistency":
            summary = verify_consistency_document(_load(args.file, CONSISTENCY_FORMAT), jwks=jwks)
        else:
            summary, details = verify_bundle(_load(args.file, BUNDLE_FORMAT), jwks=jwks)
    except (InputError, OSError) as exc:
        why = f"cannot read {exc.filename}: {exc.strerror}" if isinstance(exc, OSError) else exc
        print(f"ERROR: {why}", file=sys.stderr)
        return 2
    except VerificationError as exc:
        print(f"FAILED: {exc!s}")
        return 1
    print(f"OK {args.kind}: {summary}", *(f"  {line}" for line in details), sep="\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
