"""Merkle tree per tenant and signed checkpoints, against a real PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import time_machine
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from consentry.audit import merkle
from consentry.audit.chain import checkpoints
from consentry.audit.chain.service import append_event, append_events
from consentry.audit.consentry_verify import checkpoint_body
from consentry.audit.settings import AppenderSettings, seed_bytes
from consentry.audit.v1 import audit_pb2

from .conftest import audit_api, received

pytestmark = pytest.mark.integration
TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000f1")
KEY = "checkpoint-test-key-0123456789abcdef"
SIGNER = checkpoints.Signer.from_seed(hashlib.sha256(b"test signer").digest())
OTHER_SIGNER = checkpoints.Signer.from_seed(hashlib.sha256(b"another signer").digest())
NOW = timedelta(seconds=0)


def mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 Merkle Tree Hash, written straight from the RFC (the oracle)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)  # largest power of two < n
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


async def append(db: asyncpg.Connection, count: int, start: int = 1) -> None:
    for version in range(start, start + count):
        async with db.transaction():
            await append_event(db, received(TENANT, "ab" * 32, version))


async def test_the_stored_tree_root_is_the_rfc6962_root_at_every_size(
    db: asyncpg.Connection,
) -> None:
    for size in range(1, 34):
        await append(db, 1, start=size)
        async with db.transaction():
            row = await db.fetchrow("SELECT * FROM audit_lock_head($1)", TENANT)
        assert row is not None
        leaves = [
            r["leaf_hash"]
            for r in await db.fetch("SELECT leaf_hash FROM audit_entries ORDER BY seq")
        ]
        assert row["tree_size"] == size
        assert row["root_hash"] == mth(leaves), size


async def test_a_checkpoint_is_signed_stored_and_verifiable(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    await append(db, 5)
    async with db.transaction():
        size = await checkpoints.checkpoint(db, SIGNER, TENANT, every=1, interval=NOW)
    assert size == 5
    row = await db.fetchrow("SELECT * FROM audit_checkpoints WHERE tenant_id = $1", TENANT)
    assert row is not None
    leaves = [
        r["leaf_hash"] for r in await db.fetch("SELECT leaf_hash FROM audit_entries ORDER BY seq")
    ]
    assert row["root_hash"] == mth(leaves)
    body = checkpoint_body(
        str(TENANT), 5, row["root_hash"], merkle.timestamp(row["checkpoint_time"])
    )
    assert body.startswith(f"consentry.audit/{TENANT}\n5\n".encode())
    Ed25519PublicKey.from_public_bytes(SIGNER.public_key).verify(row["signature"], body)
    with pytest.raises(InvalidSignature):
        Ed25519PublicKey.from_public_bytes(OTHER_SIGNER.public_key).verify(row["signature"], body)

    async with db.transaction():  # nothing new: no checkpoint due
        assert await checkpoints.checkpoint(db, SIGNER, TENANT, every=1, interval=NOW) is None


async def test_checkpoints_wait_for_n_entries_or_t_seconds(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    await append(db, 3)
    async with db.transaction():  # the first checkpoint of a tenant is always due
        assert (
            await checkpoints.checkpoint(db, SIGNER, TENANT, every=10, interval=timedelta(hours=1))
            == 3
        )
    await append(db, 4, start=4)
    async with db.transaction():
        assert (
            await checkpoints.checkpoint(db, SIGNER, TENANT, every=10, interval=timedelta(hours=1))
            is None
        )
    assert await checkpoints.due_tenants(db, every=10, interval=timedelta(hours=1)) == []
    assert await checkpoints.due_tenants(db, every=4, interval=timedelta(hours=1)) == [TENANT]
    assert await checkpoints.due_tenants(db, every=10, interval=timedelta(seconds=0)) == [TENANT]


async def test_a_clock_stepped_back_does_not_hold_checkpoints_back(db: asyncpg.Connection) -> None:
    # After a step back, the last checkpoint lies in this clock's future: waiting until the
    # clock passes it again would leave new entries unsigned for as long as the step.
    hour = timedelta(hours=1)
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    await append(db, 3)
    async with db.transaction():
        assert await checkpoints.checkpoint(db, SIGNER, TENANT, every=10, interval=hour) == 3
    await append(db, 2, start=4)
    assert await checkpoints.due_tenants(db, every=10, interval=hour) == []  # not yet due
    with time_machine.travel(datetime.now(UTC) - hour, tick=True):
        assert await checkpoints.due_tenants(db, every=10, interval=hour) == [TENANT]
        async with db.transaction():
            held = await checkpoints.checkpoint_held(db, SIGNER, [TENANT], every=10, interval=hour)
        assert held == [5]
        await append(db, 2, start=6)
        async with db.transaction():
            assert await checkpoints.checkpoint(db, SIGNER, TENANT, every=10, interval=hour) is None
    # Back on the true clock the checkpoint signed at the stepped time is in the past.
    assert await checkpoints.due_tenants(db, every=10, interval=hour) == [TENANT]


async def test_the_database_refuses_a_checkpoint_of_another_tree(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    await append(db, 2)
    for size, root in ((2, bytes(32)), (1, bytes(32))):
        with pytest.raises(asyncpg.CheckViolationError, match="does not match the tree"):
            await db.execute(
                "SELECT audit_add_checkpoint($1, $2, $3, now(), $4, $5)",
                TENANT,
                size,
                root,
                SIGNER.key_id,
                bytes(64),
            )


async def test_keys_rotate_and_a_key_id_cannot_change_its_key(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
        await checkpoints.register(db, SIGNER)  # idempotent
        await checkpoints.register(db, OTHER_SIGNER)
    impostor = checkpoints.Signer(OTHER_SIGNER.private_key, SIGNER.key_id)
    with pytest.raises(asyncpg.UniqueViolationError, match="already registered"):
        await checkpoints.register(db, impostor)
    await append(db, 1)
    async with db.transaction():
        await checkpoints.checkpoint(db, SIGNER, TENANT, every=1, interval=NOW)
    await append(db, 1, start=2)
    async with db.transaction():
        await checkpoints.checkpoint(db, OTHER_SIGNER, TENANT, every=1, interval=NOW)
    used = await db.fetch("SELECT tree_size, key_id FROM audit_checkpoints ORDER BY tree_size")
    assert [(r["tree_size"], r["key_id"]) for r in used] == [
        (1, SIGNER.key_id),
        (2, OTHER_SIGNER.key_id),
    ]


async def test_checkpoints_are_append_only(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    await append(db, 1)
    async with db.transaction():
        await checkpoints.checkpoint(db, SIGNER, TENANT, every=1, interval=NOW)
    for statement in (
        "UPDATE audit_checkpoints SET tree_size = 9",
        "DELETE FROM audit_checkpoints",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)


async def test_the_api_serves_the_latest_checkpoint_and_the_jwks(
    audit_db: str, db: asyncpg.Connection
) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    await append(db, 3)
    async with db.transaction():
        await checkpoints.checkpoint(db, SIGNER, TENANT, every=1, interval=NOW)
    async with audit_api(audit_db, TENANT, KEY, authenticated=False) as client:
        jwks = (await client.get("/v1/audit/keys")).json()  # public: no key
        latest = (
            await client.get("/v1/audit/checkpoints/latest", headers={"X-API-Key": KEY})
        ).json()
        unauthenticated = await client.get("/v1/audit/checkpoints/latest")
    assert unauthenticated.status_code == 401
    (jwk,) = jwks["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["kid"]) == ("OKP", "Ed25519", SIGNER.key_id)
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "=="))
    body = checkpoint_body(
        latest["tenant_id"],
        latest["tree_size"],
        bytes.fromhex(latest["root_hash"]),
        latest["timestamp"],
    )
    public.verify(base64.urlsafe_b64decode(latest["signature"] + "=="), body)
    assert latest["tree_size"] == 3


async def test_no_checkpoint_yet_is_a_404_problem(audit_db: str) -> None:
    async with audit_api(audit_db, TENANT, KEY) as client:
        response = await client.get("/v1/audit/checkpoints/latest")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:consentry:problem:no-checkpoint"


@pytest.mark.parametrize(
    ("environment", "key", "error"),
    [
        (
            "production",
            "Z3XNQzSEBIoBrWruiiOqxE6MDT7qYrL7AEH9JlpaW8E=",
            "development signing key is refused",
        ),
        ("development", "dG9vIHNob3J0", "32 bytes"),
        ("development", "not base64 at all!", "base64|32 bytes"),
    ],
)
def test_bad_signing_keys_are_refused_at_start(environment: str, key: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        AppenderSettings(
            database_url="postgresql://x/y",
            kafka_bootstrap_servers="127.0.0.1:9092",
            environment=environment,
            audit_signing_key=key,
        )


def test_a_strong_key_is_accepted_in_production() -> None:
    seed = base64.b64encode(hashlib.sha256(b"production").digest()).decode()
    settings = AppenderSettings(
        database_url="postgresql://x/y",
        kafka_bootstrap_servers="127.0.0.1:9092",
        environment="production",
        audit_signing_key=seed,
    )
    assert seed_bytes(settings.audit_signing_key) == hashlib.sha256(b"production").digest()


async def test_a_checkpoint_is_queued_for_the_audit_topic_after_its_entries(
    db: asyncpg.Connection,
) -> None:
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
    await append(db, 2)
    async with db.transaction():
        await checkpoints.checkpoint(db, SIGNER, TENANT, every=1, interval=NOW)
    rows = await db.fetch("SELECT event_type, payload FROM eventing_outbox ORDER BY position")
    assert [row["event_type"] for row in rows] == [
        "consentry.audit.entry_appended.v1",
        "consentry.audit.entry_appended.v1",
        "consentry.audit.checkpoint_signed.v1",
    ]
    message = audit_pb2.CheckpointSigned.FromString(rows[-1]["payload"])
    stored = await db.fetchrow("SELECT * FROM audit_checkpoints")
    assert stored is not None
    assert (message.tree_size, message.root_hash, message.key_id) == (
        2,
        stored["root_hash"],
        SIGNER.key_id,
    )
    assert message.signature == stored["signature"]


async def test_checkpoints_of_held_heads_are_those_checkpoint_signs(
    db: asyncpg.Connection,
) -> None:
    """`checkpoint_held` (the appender's, three round trips for any number of tenants) signs,
    stores and queues exactly what `checkpoint` would for each due tenant."""
    tenants = [uuid.UUID(f"00000000-0000-4000-8000-0000000000e{n}") for n in range(3)]
    hour = timedelta(hours=1)
    async with db.transaction():
        await checkpoints.register(db, SIGNER)
        await append_events(db, [received(t, "ab" * 32, 1) for t in tenants])
        # A tenant's first checkpoint is always due.
        assert await checkpoints.checkpoint_held(db, SIGNER, tenants, every=3, interval=hour) == [
            1,
            1,
            1,
        ]
    async with db.transaction():
        # Grown by 4, 2 and 3 entries: with every=3, the first and the last are due.
        grown = zip(tenants, (4, 2, 3), strict=True)
        batch = [received(t, "ab" * 32, v) for t, n in grown for v in range(2, n + 2)]
        await append_events(db, batch)
        sizes = await checkpoints.checkpoint_held(
            db, SIGNER, [*tenants, uuid.uuid4()], every=3, interval=hour
        )
    assert sizes == [5, 4]
    stored = await db.fetch(
        "SELECT * FROM audit_checkpoints WHERE tree_size > 1 ORDER BY tenant_id"
    )
    assert [(row["tenant_id"], row["tree_size"]) for row in stored] == [
        (tenants[0], 5),
        (tenants[2], 4),
    ]
    published = await db.fetch(
        "SELECT payload FROM eventing_outbox WHERE event_type = $1 ORDER BY position",
        "consentry.audit.checkpoint_signed.v1",
    )
    messages = [audit_pb2.CheckpointSigned.FromString(row["payload"]) for row in published][3:]
    for row, message in zip(stored, messages, strict=True):
        leaves = [
            r["leaf_hash"]
            for r in await db.fetch(
                "SELECT leaf_hash FROM audit_entries WHERE tenant_id = $1 ORDER BY seq",
                row["tenant_id"],
            )
        ]
        assert row["root_hash"] == mth(leaves)
        timestamp = merkle.timestamp(row["checkpoint_time"])
        body = checkpoint_body(str(row["tenant_id"]), row["tree_size"], row["root_hash"], timestamp)
        Ed25519PublicKey.from_public_bytes(SIGNER.public_key).verify(row["signature"], body)
        assert (message.tenant_id, message.tree_size, message.root_hash) == (
            str(row["tenant_id"]),
            row["tree_size"],
            row["root_hash"],
        )
        assert (message.timestamp, message.key_id, message.signature) == (
            timestamp,
            SIGNER.key_id,
            row["signature"],
        )
    async with db.transaction():  # nothing grew by 3 within the hour: none due
        assert await checkpoints.checkpoint_held(db, SIGNER, tenants, every=3, interval=hour) == []
    async with db.transaction():  # T passed (0 s): the one that grew by 2 only
        assert await checkpoints.checkpoint_held(db, SIGNER, tenants, every=3, interval=NOW) == [3]
