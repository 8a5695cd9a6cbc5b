"""`consentry` end to end on the real stack: every command group, its output and exit code."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from consentry.cli.main import app
from consentry.eventing import topics
from consentry.eventing.testing import Record, collect, header
from consentry.sdk import Consentry

from .conftest import run

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_help_lists_every_command() -> None:
    listed = CliRunner().invoke(app, ["--help"]).stdout
    for command in ("tenant", "key", "policy", "subject", "erasure", "import", "replay", "audit"):
        assert command in listed
    assert "tail" in listed


def test_tenant_and_key_created_then_used(env: dict[str, str]) -> None:
    created = run(
        env,
        "tenant",
        "create",
        "--name=CLI Test AB",
        "--scope=admin",
        "--scope=policy:admin",
        "--json",
    )
    assert created.exit_code == 0, created.output
    tenant = json.loads(created.stdout)
    assert sorted(tenant["scopes"]) == ["admin", "policy:admin"]
    assert "shown only now" in created.stderr
    admin = {**env, "CONSENTRY_API_KEY": tenant["api_key"]}

    # the new tenant's first policy version, then a check under it, with the new keys
    published = run(
        admin,
        "policy",
        "publish",
        "v1",
        "--url=https://example.com/p/v1",
        "--effective-on=2026-11-01",
        "--notice=performance=We measure.",
        "--json",
    )
    assert published.exit_code == 0, published.output
    assert json.loads(published.stdout)["version"] == "v1"
    again = run(
        admin,
        "policy",
        "publish",
        "v1",
        "--url=https://example.com/p/v1",
        "--effective-on=2026-11-01",
        "--notice=performance=We measure.",
    )
    assert again.exit_code == 1
    assert "urn:consentry:problem:policy-version-exists" in again.stderr
    assert "Traceback" not in again.output

    reader = run(
        env,
        "key",
        "create",
        f"--tenant-id={tenant['tenant_id']}",
        "--name=reader",
        "--scope=consent:read",
        "--json",
    )
    assert reader.exit_code == 0, reader.output
    read_key = json.loads(reader.stdout)["api_key"]
    checked = run(
        env, "--api-key", read_key, "subject", "check", "someone", "performance", "--json"
    )
    assert checked.exit_code == 0, checked.output
    [row] = json.loads(checked.stdout)
    assert (row["purpose"], row["allowed"]) == ("performance", False)  # nobody consented
    # the read key may not publish
    refused = run(
        env,
        "--api-key",
        read_key,
        "policy",
        "publish",
        "v2",
        "--url=https://e.com/2",
        "--effective-on=2027-01-01",
        "--notice=performance=x",
    )
    assert refused.exit_code == 1
    assert "urn:consentry:problem:forbidden" in refused.stderr

    unknown = run(env, "key", "create", f"--tenant-id={uuid.uuid4()}", "--name=x", "--scope=admin")
    assert unknown.exit_code == 1
    assert "error: no tenant" in unknown.stderr


def test_unknown_key_is_one_line(env: dict[str, str]) -> None:
    result = run(
        {**env, "CONSENTRY_API_KEY": "csk_nope_nope"}, "subject", "check", "a", "performance"
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: urn:consentry:problem:unauthenticated (401)")
    assert len(result.stderr.strip().splitlines()) == 1


def test_subject_check_after_consent(
    env: dict[str, str], policy: str, client: Consentry, subject_id: str
) -> None:
    client.give(subject_id, "performance", policy_version=policy)
    result = run(env, "subject", "check", subject_id, "performance", "targeting", "--json")
    assert result.exit_code == 0, result.output
    answers = {row["purpose"]: row["allowed"] for row in json.loads(result.stdout)}
    assert answers == {"performance": True, "targeting": False}
    table = run(env, "subject", "check", subject_id, "performance")
    assert "performance" in table.stdout
    assert "yes" in table.stdout


def test_erasure_start_follow_completes(
    env: dict[str, str], policy: str, client: Consentry, subject_id: str
) -> None:
    client.give(subject_id, "performance", policy_version=policy)
    result = run(
        env, "erasure", "start", subject_id, "--follow", "--timeout=60", "--interval=0.3", "--json"
    )
    assert result.exit_code == 0, result.output
    closed = json.loads(result.stdout)
    assert closed["state"] == "completed"
    assert closed["certificate"]
    assert client.check(subject_id, "performance").allowed is False


def test_erasure_bulk_follow_completes(
    env: dict[str, str], policy: str, client: Consentry, tmp_path: Path
) -> None:
    subjects = [f"cli-bulk-{secrets.token_hex(4)}" for _ in range(3)]
    for subject in subjects:
        client.give(subject, "performance", policy_version=policy)
    listing = tmp_path / "subjects.txt"
    listing.write_text("# to erase\n" + "\n".join(subjects) + "\n\n")
    result = run(
        env, "erasure", "bulk", str(listing), "--follow", "--timeout=60", "--interval=0.3", "--json"
    )
    assert result.exit_code == 0, result.output
    closed = json.loads(result.stdout)
    assert closed["state"] == "completed"
    assert closed["subject_count"] == 3
    assert all(not client.check(s, "performance").allowed for s in subjects)


def test_import_reports_rejects_and_records_the_rest(
    env: dict[str, str], policy: str, client: Consentry, tmp_path: Path
) -> None:
    good, other = f"cli-imp-{secrets.token_hex(4)}", f"cli-imp-{secrets.token_hex(4)}"
    csv = tmp_path / "consents.csv"
    csv.write_text(
        "subject_id,purpose,status,policy_version,source\n"
        f"{good},performance,given,{policy},crm\n"  # line 2
        f"{good},targeting,maybe,{policy},crm\n"  # line 3: not a status
        f"{other},no-such-purpose,given,{policy},crm\n"  # line 4: the API refuses it
        f"{other},targeting,given,,crm\n"  # line 5: no policy version
        f"{other},functionality,given,{policy},\n"  # line 6
        f"{good},performance,withdrawn,{policy},crm\n"  # line 7: after line 2, same subject
    )
    rejects = tmp_path / "rejects.jsonl"
    result = run(env, "import", "consents", str(csv), f"--rejects={rejects}", "--json")
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["accepted"], summary["rejected"]) == (6, 3, 3)
    assert [r["line"] for r in summary["rejects"]] == [3, 4, 5]
    assert "status" in summary["rejects"][0]["reason"]
    assert "urn:consentry:problem:" in summary["rejects"][1]["reason"]
    assert "policy_version" in summary["rejects"][2]["reason"]
    assert "csv line 4: urn:consentry:problem:" in result.stderr
    assert good not in result.stderr  # no subject identifiers in what is printed
    written = [json.loads(line) for line in rejects.read_text().splitlines()]
    assert [w["line"] for w in written] == [3, 4, 5]
    # the good rows landed, in file order per subject, recorded as imported
    assert client.consents(good).status("performance") == "withdrawn"
    assert client.consents(other).status("functionality") == "given"
    assert client.proof(other).history[0].method == "import"

    jsonl = tmp_path / "consents.jsonl"
    jsonl.write_text(
        json.dumps(
            {
                "subject_id": other,
                "purpose": "targeting",
                "status": "given",
                "policy_version": policy,
            }
        )
        + "\n"
    )
    clean = run(env, "import", "consents", str(jsonl))
    assert clean.exit_code == 0, clean.output
    assert "1 rows: 1 accepted, 0 rejected" in clean.stdout
    assert client.consents(other).status("targeting") == "given"


def test_replay_requeues_published_events(
    env: dict[str, str], policy: str, client: Consentry, subject_id: str, stack: object
) -> None:
    recorded = client.give(subject_id, "performance", policy_version=policy)
    ref = client.consents(subject_id).subject_ref
    since = (datetime.now(UTC) - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S%z")
    first = _consent_events(env, ref, 1)
    result = run(env, "replay", "consent", f"--since={since}", "--follow", "--timeout=60", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queued"] >= 1
    # the relay published the same event (same CloudEvents id) once more
    again = _consent_events(env, ref, 2)
    assert {header(r, "ce_id") for r in again} == {header(r, "ce_id") for r in first}
    assert recorded.subject_version == 1


def _consent_events(env: dict[str, str], subject_ref: str, count: int) -> list[Record]:
    return asyncio.run(
        collect(
            env["CONSENTRY_KAFKA_BOOTSTRAP_SERVERS"],
            topics.CONSENT,
            lambda kept: len(kept) >= count,
            keep=lambda record: header(record, "ce_subject") == subject_ref,
            seconds=30,
        )
    )


def test_tail_decodes_a_known_event(
    env: dict[str, str], policy: str, client: Consentry, subject_id: str
) -> None:
    client.give(subject_id, "functionality", policy_version=policy, source="cli-tail")
    ref = client.consents(subject_id).subject_ref
    _consent_events(env, ref, 1)  # on the topic
    result = run(env, "tail", topics.CONSENT, "--from-beginning", "--idle-exit=1")
    assert result.exit_code == 0, result.output
    mine = [
        document
        for document in map(json.loads, result.stdout.splitlines())
        if document.get("subject") == ref
    ]
    assert mine, result.stdout[-2000:]
    event = mine[0]
    assert event["type"] == "consentry.consent.given.v1"
    assert event["data"]["decision"]["purpose"] == "functionality"
    assert event["tenant"] == "00000000-0000-4000-8000-000000000001"  # the dev tenant
    assert event["id"]
    assert event["offset"] >= 0
    limited = run(env, "tail", topics.CONSENT, "--from-beginning", "--limit=1")
    assert limited.exit_code == 0, limited.output
    assert len(limited.stdout.splitlines()) == 1
    missing = run(env, "tail", "consentry.nothing.v1", "--from-beginning", "--limit=1")
    assert missing.exit_code == 2
    assert "no topic" in missing.stderr


def test_audit_export_verifies_and_tampering_fails(
    env: dict[str, str], policy: str, client: Consentry, subject_id: str, tmp_path: Path
) -> None:
    client.give(subject_id, "performance", policy_version=policy)
    _wait_for_checkpoint(env)
    export = tmp_path / "export.jsonl"
    exported = run(env, "audit", "export", "-o", str(export))
    assert exported.exit_code == 0, exported.output
    keys = tmp_path / "jwks.json"
    assert run(env, "audit", "keys", "-o", str(keys)).exit_code == 0

    verified = run(env, "audit", "verify", str(export), f"--jwks={keys}", "--json")
    assert verified.exit_code == 0, verified.output
    report = json.loads(verified.stdout)
    assert report["verified"] is True
    assert report["entries"] >= 1
    assert report["checkpoints"] >= 1
    assert report["keys"] == "pinned JWKS"

    lines = export.read_text().splitlines()
    record = json.loads(lines[1])
    entry = bytearray(base64.b64decode(record["entry"]))
    entry[-1] ^= 0x01  # one bit of the first entry
    record["entry"] = base64.b64encode(bytes(entry)).decode()
    lines[1] = json.dumps(record)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    failed = run(env, "audit", "verify", str(tampered))
    assert failed.exit_code == 1
    assert "verification FAILED: entry seq 1" in failed.stderr
    assert "altered" in failed.stderr
    assert "Traceback" not in failed.output

    not_export = tmp_path / "other.json"
    not_export.write_text('{"format": "something else"}\n')
    unreadable = run(env, "audit", "verify", str(not_export))
    assert unreadable.exit_code == 2
    assert "not a consentry.audit.export.v1 export" in unreadable.stderr


def _wait_for_checkpoint(env: dict[str, str]) -> None:
    """Until the dev tenant's audit log has a signed checkpoint (the appender signs within a
    second of new entries here)."""
    deadline = time.monotonic() + 45
    with httpx.Client(
        base_url=env["CONSENTRY_AUDIT_URL"],
        headers={"Authorization": f"Bearer {env['CONSENTRY_API_KEY']}"},
        timeout=10,
    ) as audit:
        while audit.get("/v1/audit/checkpoints/latest").status_code != 200:
            assert time.monotonic() < deadline, "no audit checkpoint within 45 s"
            time.sleep(0.2)
