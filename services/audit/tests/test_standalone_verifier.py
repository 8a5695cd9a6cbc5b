"""consentry-verify end to end: real AuditEntry bytes, real Ed25519 checkpoints, tampering."""

from __future__ import annotations

import ast
import base64
import contextlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from consentry.audit import consentry_verify as cv
from consentry.audit import merkle
from consentry.audit.v1 import audit_pb2

TENANT = "0b7f5c1e-6a52-4d7e-9a43-3f3f1c2b9d10"
KEYS = {kid: Ed25519PrivateKey.generate() for kid in ("k1", "k2", "evil")}
JWKS = merkle.jwks((kid, KEYS[kid].public_key()) for kid in ("k1", "k2"))
START = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
SUBJECTS = ("subject-a", "subject-b", "subject-c")


def make_entry(seq: int, subject: str | None = None, data: bytes = b"\x08\x01") -> bytes:
    entry = audit_pb2.AuditEntry(
        tenant_id=TENANT,
        event_id=f"evt-{seq}",
        event_type="consentry.consent.given.v1" if seq % 2 else "consentry.consent.withdrawn.v1",
        event_source="/consentry/consent",
        subject_ref=subject or SUBJECTS[seq % 3],
        content_type="application/protobuf",
        data=data,
        topic="consentry.consent.v1",
    )
    entry.event_time.FromDatetime(START + timedelta(seconds=seq, microseconds=250_000))
    return entry.SerializeToString(deterministic=True)


ENTRIES = [make_entry(seq) for seq in range(1, 31)]
HASHES = [cv.leaf_hash(e) for e in ENTRIES]


def checkpoint(entries: list[bytes], size: int, kid: str = "k2", key: str = "") -> dict[str, Any]:
    root = cv.root_from_leaf_hashes([cv.leaf_hash(e) for e in entries[:size]])
    when = START + timedelta(minutes=size)
    return merkle.sign_checkpoint(KEYS[key or kid], kid, TENANT, size, root, when)


CPS = [checkpoint(ENTRIES, 10, "k1"), checkpoint(ENTRIES, 20), checkpoint(ENTRIES, 30)]


def rows(entries: list[bytes]) -> list[dict[str, Any]]:
    """Entry records with stored hashes computed honestly for these entries."""
    out, prev = [], cv.GENESIS
    for seq, entry in enumerate(entries, start=1):
        leaf = cv.leaf_hash(entry)
        prev = cv.chain_hash(prev, leaf)
        out.append(json.loads(merkle.export_line(seq, entry, leaf, prev)))
    return out


def write_export(
    path: Path, records: list[dict[str, Any]], cps: list[dict[str, Any]], jwks: Any = JWKS
) -> Path:
    lines = [merkle.export_header(TENANT, jwks, cps)] + [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = cv.main(list(argv))
    return code, out.getvalue()


def b64(entry: bytes) -> str:
    return base64.b64encode(entry).decode()


def test_valid_export_with_key_rotation(tmp_path: Path) -> None:
    path = write_export(tmp_path / "e.jsonl", rows(ENTRIES), CPS)
    code, out = run("export", str(path))
    assert code == 0, out
    assert out.startswith(f"OK export: tenant {TENANT}: 30 entries verified against 3 signed")
    assert "checkpoint at tree size 30 (2026-11-29T09:30:00Z, key k2)" in out
    assert len(out.splitlines()) == 1
    head = rows(ENTRIES)[-1]["chain_hash"]
    for workers in (1, 2, 3):
        report = cv.verify_export(str(path), workers=workers)
        assert report == cv.verify_export(str(path), fast=False)
        assert report.head_chain_hash == head
    with path.open("rb") as f:
        f.readline()
        fast = cv._fast_export(str(path), f.tell(), {10: [cv.parse_checkpoint(CPS[0])]}, 2)
    assert fast is not None
    assert fast[0] == 30


@pytest.mark.parametrize("workers", [1, 3])
def test_progress_is_reported_up_to_the_whole_file(tmp_path: Path, workers: int) -> None:
    path = write_export(tmp_path / "e.jsonl", rows(ENTRIES), CPS)
    seen: list[tuple[int, int]] = []
    report = cv.verify_export(
        str(path), workers=workers, progress=lambda done, total: seen.append((done, total))
    )
    assert report == cv.verify_export(str(path), fast=False)
    total = path.stat().st_size - len(path.read_bytes().split(b"\n", 1)[0]) - 1
    assert len(seen) > 1  # segment by segment, not only at the end
    assert {t for _, t in seen} == {total}
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (total, total)
    # Tampering is still found when the file is cut in more segments.
    tampered = rows(ENTRIES)
    tampered[17] = {**tampered[17], "entry": b64(make_entry(99))}
    bad = write_export(tmp_path / "bad.jsonl", tampered, CPS)
    with pytest.raises(cv.VerificationError, match="seq 18"):
        cv.verify_export(str(bad), workers=workers, progress=lambda done, total: None)


def test_entries_after_the_last_checkpoint_and_non_canonical_layout(tmp_path: Path) -> None:
    records = rows([*ENTRIES, make_entry(31), make_entry(32)])
    path = tmp_path / "e.jsonl"
    lines = [merkle.export_header(TENANT, JWKS, CPS)]
    lines += [json.dumps(r, separators=(",", ":")) for r in records]
    path.write_text("\n".join(lines) + "\n")
    code, out = run("export", str(path), "--workers", "2")
    assert code == 0, out
    assert "32 entries verified" in out
    assert "entries after seq 30 are not yet covered by a checkpoint" in out


def edited(seq: int) -> list[bytes]:
    entries = list(ENTRIES)
    entries[seq - 1] = make_entry(seq, data=b"\x08\x02")
    return entries


def swapped(entries: list[Any], i: int) -> list[Any]:
    out = list(entries)
    out[i], out[i + 1] = out[i + 1], out[i]
    return out


HONEST = rows(ENTRIES)
TAMPERING: dict[str, tuple[Callable[[], list[dict[str, Any]]], list[str]]] = {
    "edited entry, stored hashes kept": (
        lambda: [*HONEST[:4], {**HONEST[4], "entry": b64(edited(5)[4])}, *HONEST[5:]],
        ["entry seq 5 (event evt-5, consentry.consent.given.v1) was altered"],
    ),
    "edited entry, all hashes recomputed": (
        lambda: rows(edited(15)),
        ["checkpoint at tree size 20", "between seq 11 and seq 20", "up to seq 10 match"],
    ),
    "deleted entry": (
        lambda: HONEST[:6] + HONEST[7:],
        ["entry seq 7 is missing: line 8 holds seq 8"],
    ),
    "deleted entry, renumbered and rehashed": (
        lambda: rows(ENTRIES[:6] + ENTRIES[7:]),
        ["checkpoint at tree size 10 (2026-11-29T09:10:00Z, key k1)", "between seq 1 and seq 10"],
    ),
    "reordered entries": (lambda: swapped(HONEST, 4), ["entry seq 5 is missing", "seq 6"]),
    "reordered entries, renumbered and rehashed": (
        lambda: rows(swapped(ENTRIES, 24)),
        ["checkpoint at tree size 30", "between seq 21 and seq 30"],
    ),
    "truncated log": (
        lambda: HONEST[:25],
        ["log truncated", "tree size 30", "ends at seq 25", "entries 26..30 are missing"],
    ),
    "spliced-in entry with a repeated seq": (
        lambda: [*HONEST[:12], {**HONEST[11], "entry": b64(make_entry(99))}, *HONEST[12:]],
        ["line 14: entry seq 12 (event evt-99", "out of order or duplicated (expected seq 13)"],
    ),
    "non-canonical record (upper-case chain hash)": (
        lambda: [*HONEST[:4], {**HONEST[4], "chain_hash": HONEST[4]["chain_hash"].upper()}],
        ["line 6: malformed entry record"],
    ),
    "spliced-in entry, renumbered and rehashed": (
        lambda: rows([*ENTRIES[:12], make_entry(99), *ENTRIES[12:]]),
        ["checkpoint at tree size 20", "between seq 11 and seq 20"],
    ),
}


@pytest.mark.parametrize("case", list(TAMPERING))
@pytest.mark.parametrize("workers", [1, 2])
def test_tampering_is_detected_and_named(tmp_path: Path, case: str, workers: int) -> None:
    make, expected = TAMPERING[case]
    path = write_export(tmp_path / "e.jsonl", make(), CPS)
    code, out = run("export", str(path), "--workers", str(workers))
    assert code == 1
    assert out.startswith("FAILED: ")
    for fragment in expected:
        assert fragment in out, out


FORGED: dict[str, tuple[Callable[[], list[dict[str, Any]]], str]] = {
    "signed with another key under a known key id": (
        lambda: [CPS[0], CPS[1], checkpoint(ENTRIES, 30, "k2", key="evil")],
        "checkpoint at tree size 30 (2026-11-29T09:30:00Z, key k2): bad signature",
    ),
    "root altered": (
        lambda: [CPS[0], {**CPS[1], "root_hash": HASHES[0].hex()}, CPS[2]],
        "checkpoint at tree size 20 (2026-11-29T09:20:00Z, key k2): bad signature",
    ),
    "signed with an unknown key": (
        lambda: [*CPS, checkpoint(ENTRIES, 30, "evil")],
        "checkpoint at tree size 30 (2026-11-29T09:30:00Z, key evil): unknown key id",
    ),
    "malformed": (lambda: [{**CPS[0], "timestamp": "yesterday"}], "malformed checkpoint"),
    "another tenant's": (
        lambda: [{**CPS[0], "tenant_id": "other"}],
        "bad signature",
    ),
}


@pytest.mark.parametrize("case", list(FORGED))
def test_forged_checkpoints_fail(tmp_path: Path, case: str) -> None:
    make, expected = FORGED[case]
    path = write_export(tmp_path / "e.jsonl", HONEST, make())
    code, out = run("export", str(path))
    assert (code, out.startswith("FAILED: ")) == (1, True)
    assert expected in out, out


def test_rewritten_log_with_the_attackers_own_keys_needs_pinned_keys(tmp_path: Path) -> None:
    forged = edited(3)
    evil_jwks = merkle.jwks([("k1", KEYS["evil"].public_key())])
    cps = [checkpoint(forged, 30, "k1", key="evil")]
    path = write_export(tmp_path / "e.jsonl", rows(forged), cps, jwks=evil_jwks)
    code, out = run("export", str(path))
    assert code == 0
    assert "keys: embedded JWKS (unpinned)" in out
    trusted = tmp_path / "jwks.json"
    trusted.write_text(json.dumps(JWKS))
    code, out = run("export", str(path), "--jwks", str(trusted))
    assert code == 1
    assert "checkpoint at tree size 30 (2026-11-29T09:30:00Z, key k1): bad signature" in out
    honest = write_export(tmp_path / "h.jsonl", HONEST, CPS)
    assert run("export", str(honest), "--jwks", str(trusted))[1].endswith("keys: pinned JWKS\n")


@pytest.mark.parametrize(
    ("jwks", "expected"),
    [
        ({}, "bad JWKS (KeyError('keys'))"),
        ({"keys": [{**JWKS["keys"][0], "kty": "RSA"}]}, "not an Ed25519 key"),
        ({"keys": [JWKS["keys"][0], JWKS["keys"][0]]}, "key id listed twice in the JWKS"),
        ({"keys": [{**JWKS["keys"][0], "x": "A"}]}, "bad JWKS"),
    ],
)
def test_malformed_jwks(tmp_path: Path, jwks: dict[str, Any], expected: str) -> None:
    code, out = run("export", str(write_export(tmp_path / "e.jsonl", HONEST, CPS, jwks=jwks)))
    assert code == 1
    assert out.startswith("FAILED: checkpoint at tree size 10 (2026-11-29T09:10:00Z, key k1): ")
    assert expected in out, out


def test_unreadable_input_exits_2(tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("not json\n")
    (tmp_path / "other.json").write_text(json.dumps({"format": "something.else"}))
    assert run("export", str(tmp_path / "missing"))[0] == 2
    assert run("export", str(tmp_path / "junk"))[0] == 2
    assert run("bundle", str(tmp_path / "other.json"))[0] == 2
    assert run("inclusion", str(tmp_path / "junk"))[0] == 2
    code, out = run("export", str(tmp_path / "junk"), "--jwks", str(tmp_path / "missing"))
    assert (code, out) == (
        2,
        f"ERROR: cannot read {tmp_path / 'missing'}: No such file or directory\n",
    )


def write(path: Path, doc: dict[str, Any]) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def test_inclusion_proofs(tmp_path: Path) -> None:
    doc = merkle.inclusion_document(HASHES, ENTRIES[16], 16, CPS[2], JWKS)
    code, out = run("inclusion", write(tmp_path / "ok.json", doc))
    assert code == 0, out
    assert (
        "entry seq 17 (event evt-17, consentry.consent.given.v1) is included in checkpoint" in out
    )
    proof = [*doc["proof"]]
    proof[1] = HASHES[0].hex()
    for bad in (
        {**doc, "entry": b64(edited(17)[16])},
        {**doc, "leaf_index": 15},
        {**doc, "proof": proof},
        {**doc, "checkpoint": CPS[1]},
    ):
        code, out = run("inclusion", write(tmp_path / "bad.json", bad))
        assert code == 1
        assert "is not included in checkpoint" in out, out


def test_consistency_proofs(tmp_path: Path) -> None:
    doc = merkle.consistency_document(HASHES, CPS[0], CPS[2], JWKS)
    code, out = run("consistency", write(tmp_path / "ok.json", doc))
    assert code == 0, out
    assert "checkpoint at tree size 30" in out
    assert "extends checkpoint at tree size 10" in out
    fork = edited(4)  # a split view: the same operator signed a rewritten history
    forked = checkpoint(fork, 30)
    bad = merkle.consistency_document([cv.leaf_hash(e) for e in fork], CPS[0], forked, JWKS)
    code, out = run("consistency", write(tmp_path / "bad.json", bad))
    assert code == 1
    assert "is not an extension of checkpoint at tree size 10" in out
    code, out = run("consistency", write(tmp_path / "sig.json", {**doc, "old": CPS[1] | {}}))
    assert code == 1


def bundle(subject: str = "subject-a") -> dict[str, Any]:
    mine = [(s, e) for s, e in enumerate(ENTRIES, start=1) if SUBJECTS[s % 3] == subject]
    return merkle.bundle_document(HASHES, subject, mine, CPS[2], JWKS)


def test_bundle_ok_and_tampered(tmp_path: Path) -> None:
    doc = bundle()
    code, out = run("bundle", write(tmp_path / "ok.json", doc))
    assert code == 0, out
    first, *details = out.splitlines()
    assert first.startswith("OK bundle: subject subject-a of tenant")
    assert "10 entries included in checkpoint at tree size 30" in first
    assert details[0] == (
        "  seq 3: consentry.consent.given.v1 event evt-3 at 2026-11-29T09:00:03.25Z"
        " from /consentry/consent"
    )
    other = bundle("subject-b")["entries"][0]
    tampered_entry = {**doc["entries"][1], "entry": b64(edited(6)[5])}
    for entries, expected in (
        ([*doc["entries"], other], "belongs to subject 'subject-b'"),
        ([doc["entries"][0], tampered_entry], "entry seq 6 (event evt-6"),
        ([doc["entries"][0], doc["entries"][0]], "bad or repeated seq"),
        ([], "bundle holds no entries"),
    ):
        code, out = run("bundle", write(tmp_path / "bad.json", {**doc, "entries": entries}))
        assert (code, expected in out) == (1, True), out
    forged = {**doc, "checkpoint": {**CPS[2], "tree_size": 29}}
    assert "bad signature" in run("bundle", write(tmp_path / "f.json", forged))[1]


def test_runs_as_a_single_copied_file(tmp_path: Path) -> None:
    """The module works alone: no consentry or protobuf import, only stdlib + cryptography."""
    alone = tmp_path / "x" / "consentry_verify.py"
    alone.parent.mkdir()
    shutil.copy(cv.__file__, alone)
    export = write_export(tmp_path / "e.jsonl", HONEST, CPS)
    bad = write_export(tmp_path / "bad.jsonl", HONEST[:25], CPS)
    bundle_file = write(tmp_path / "b.json", bundle())
    blocker = (
        "import runpy, sys; sys.modules.update(consentry=None, google=None); "
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    for argv, code, start in (
        ([str(alone), "export", str(export), "--workers", "2"], 0, "OK export"),
        ([str(alone), "export", str(bad)], 1, "FAILED: log truncated"),
        ([str(alone), "bundle", bundle_file], 0, "OK bundle"),
    ):
        for prefix in ([], ["-I", "-c", blocker]):
            done = subprocess.run(
                [sys.executable, *prefix, *argv], capture_output=True, text=True, check=False
            )
            assert (done.returncode, done.stderr) == (code, ""), done.stdout
            assert done.stdout.startswith(start)
    tree = ast.parse(alone.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    roots = {name.split(".")[0] for name in imported}
    assert roots - set(sys.stdlib_module_names) == {"cryptography"}


def test_entry_decoder_agrees_with_protobuf() -> None:
    for entry in [*ENTRIES[:5], make_entry(7, data=bytes(range(256)) * 3)]:
        parsed = audit_pb2.AuditEntry.FromString(entry)
        fields = cv.decode_audit_entry(entry)
        for name in ("tenant_id", "event_id", "event_type", "subject_ref", "topic"):
            assert fields[name] == getattr(parsed, name)
        stamp = parsed.event_time.ToDatetime(tzinfo=UTC).isoformat().replace("+00:00", "Z")
        assert fields["event_time"] == stamp.replace(".250000", ".25")
    with pytest.raises(ValueError, match="truncated"):
        cv.decode_audit_entry(ENTRIES[0][:-3])
