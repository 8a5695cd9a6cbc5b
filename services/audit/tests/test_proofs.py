"""Proof documents served by the audit API, checked by the standalone verifier."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from consentry.audit.chain import checkpoints
from consentry.audit.chain.service import append_event
from consentry.audit.consentry_verify import (
    VerificationError,
    verify_bundle,
    verify_consistency_document,
    verify_export,
    verify_inclusion_document,
)

from .conftest import audit_api, received

pytestmark = pytest.mark.integration
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000b7")
KEY = "proofs-test-key-0123456789abcdef"
SIGNER = checkpoints.Signer.from_seed(hashlib.sha256(b"proofs").digest())
ALICE, BOB = "a1" * 32, "b2" * 32


@pytest_asyncio.fixture
async def client(audit_db: str, db: asyncpg.Connection) -> AsyncIterator[httpx.AsyncClient]:
    """Nine entries (alice 1, 4, 7; bob the rest) and checkpoints at sizes 3, 6 and 9."""
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    for version in range(1, 10):
        subject = ALICE if version % 3 == 1 else BOB
        async with db.transaction():
            await append_event(db, received(TENANT, subject, version))
            if version % 3 == 0:
                await checkpoints.checkpoint(
                    db, SIGNER, TENANT, every=3, interval=timedelta(hours=1)
                )
    async with audit_api(audit_db, TENANT, KEY) as client:
        yield client


async def pinned_keys(client: httpx.AsyncClient) -> dict[str, object]:
    keys: dict[str, object] = (await client.get("/v1/audit/keys")).json()
    return keys


async def test_inclusion_and_consistency_proofs_verify(client: httpx.AsyncClient) -> None:
    keys = await pinned_keys(client)
    for seq, size in ((1, None), (5, 6), (3, 3)):
        params = {"tree_size": size} if size else {}
        document = (await client.get(f"/v1/audit/entries/{seq}/inclusion", params=params)).json()
        assert document["format"] == "consentry.audit.inclusion.v1"
        summary = verify_inclusion_document(document, jwks=keys)  # raises on any failure
        assert summary.startswith(f"entry seq {seq} ")
        assert f"tree size {size or 9}" in summary
    for old, new in ((3, 6), (3, None), (6, 9)):
        params = {"old_size": old} | ({"new_size": new} if new else {})
        document = (await client.get("/v1/audit/consistency", params=params)).json()
        verify_consistency_document(document, jwks=keys)
    tampered = (await client.get("/v1/audit/entries/2/inclusion")).json()
    tampered["leaf_index"] = 2
    with pytest.raises(VerificationError):
        verify_inclusion_document(tampered, jwks=keys)


async def test_a_subjects_bundle_verifies_offline(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    keys = await pinned_keys(client)
    bundle = (await client.get(f"/v1/audit/subjects/{ALICE}/bundle")).json()
    assert [entry["seq"] for entry in bundle["entries"]] == [1, 4, 7]
    summary, lines = verify_bundle(bundle, jwks=keys)
    assert ALICE in summary
    assert len(lines) == 3
    assert all("consentry.consent.given.v1" in line for line in lines)
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    code, out = await verifier("bundle", tmp_path / "bundle.json", "--jwks", tmp_path / "keys.json")
    assert code == 0, out
    assert out.startswith("OK")


async def test_missing_things_are_404_problems(client: httpx.AsyncClient) -> None:
    for path in (
        f"/v1/audit/subjects/{'c3' * 32}/bundle",
        "/v1/audit/entries/99/inclusion",
        "/v1/audit/entries/1/inclusion?tree_size=4",
        "/v1/audit/consistency?old_size=5",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path
        assert response.json()["type"] == "urn:consentry:problem:proof-not-available"


async def test_an_export_verifies_and_tampering_is_named(
    client: httpx.AsyncClient, db: asyncpg.Connection, tmp_path: Path
) -> None:
    keys = await pinned_keys(client)
    (tmp_path / "keys.json").write_text(json.dumps(keys))
    export = tmp_path / "export.jsonl"
    export.write_bytes((await client.get("/v1/audit/export")).content)
    report = verify_export(str(export), jwks=keys)
    assert (report.entries, report.checkpoints) == (9, 3)
    code, out = await verifier("export", export, "--jwks", tmp_path / "keys.json")
    assert code == 0, out

    async with db.transaction():  # a database owner edits entry 5 and fixes up its hashes
        await db.execute("ALTER TABLE audit_entries DISABLE TRIGGER audit_entries_no_update_delete")
        await db.execute(
            """
            UPDATE audit_entries SET entry = entry || '\\x00'::bytea,
                   leaf_hash = sha256('\\x00'::bytea || entry || '\\x00'::bytea)
            WHERE tenant_id = $1 AND seq = 5
            """,
            TENANT,
        )
        await db.execute(
            "ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER audit_entries_no_update_delete"
        )
    export.write_bytes((await client.get("/v1/audit/export")).content)
    code, out = await verifier("export", export, "--jwks", tmp_path / "keys.json")
    assert code == 1
    assert out.startswith("FAILED")
    assert "seq 5" in out


async def verifier(*args: object) -> tuple[int, str]:
    """The standalone verifier as a person runs it: `consentry-verify …` in a subprocess."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "consentry.audit.consentry_verify",
        *map(str, args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    return process.returncode or 0, out.decode()
