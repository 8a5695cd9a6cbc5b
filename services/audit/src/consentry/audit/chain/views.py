"""HTTP routes of the audit chain: verify it and read it."""

from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, Query, Request

from consentry.audit.chain import repository, service
from consentry.audit.chain.checkpoints import rfc3339
from consentry.audit.chain.models import (
    AuditEntryOut,
    AuditEntryPage,
    ChainReport,
    CheckpointOut,
    Jwk,
    Jwks,
)
from consentry.eventing.db import Pool
from consentry.httpapi.auth import AuditRead
from consentry.httpapi.problems import Problem

router = APIRouter(prefix="/v1/audit", tags=["audit"])


def _pool(request: Request) -> Pool:
    pool: Pool = request.app.state.pool
    return pool


@router.get("/verify", response_model=ChainReport)
async def verify(request: Request, principal: AuditRead) -> ChainReport:
    """Walk the caller's tenant chain, recomputing every hash; report the first broken entry."""
    async with _pool(request).acquire() as conn:
        return await service.verify_tenant(conn, principal.tenant_id)


@router.get("/entries", response_model=AuditEntryPage)
async def entries(
    request: Request,
    principal: AuditRead,
    after_seq: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    subject_ref: Annotated[str | None, Query(pattern=r"^[0-9a-f]{64}$")] = None,
) -> AuditEntryPage:
    """Entries of the caller's tenant chain in order, optionally for one subject reference."""
    async with _pool(request).acquire() as conn:
        rows = await repository.page(
            conn,
            tenant_id=principal.tenant_id,
            after_seq=after_seq,
            limit=limit,
            subject_ref=subject_ref,
        )
    items = [
        AuditEntryOut(
            seq=row["seq"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            subject_ref=row["subject_ref"],
            entry=base64.b64encode(row["entry"]).decode(),
            leaf_hash=row["leaf_hash"].hex(),
            chain_hash=row["chain_hash"].hex(),
            appended_at=row["appended_at"],
        )
        for row in rows
    ]
    return AuditEntryPage(
        entries=items, next_after_seq=items[-1].seq if len(items) == limit else None
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@router.get("/checkpoints/latest", response_model=CheckpointOut)
async def latest_checkpoint(request: Request, principal: AuditRead) -> CheckpointOut:
    """The newest signed checkpoint of the caller's tenant chain."""
    async with _pool(request).acquire() as conn:
        row = await repository.latest_checkpoint(conn, tenant_id=principal.tenant_id)
    if row is None:
        raise Problem(404, "no-checkpoint", "No checkpoint has been signed for this tenant yet")
    return CheckpointOut(
        tenant_id=str(row["tenant_id"]),
        tree_size=row["tree_size"],
        root_hash=row["root_hash"].hex(),
        timestamp=rfc3339(row["checkpoint_time"]),
        key_id=row["key_id"],
        signature=_b64url(row["signature"]),
    )


@router.get("/keys", response_model=Jwks)
async def keys(request: Request) -> Jwks:
    """The public keys that sign checkpoints, as a JWKS (public: no API key needed)."""
    async with _pool(request).acquire() as conn:
        rows = await repository.signing_keys(conn)
    return Jwks(keys=[Jwk(kid=row["key_id"], x=_b64url(row["public_key"])) for row in rows])
