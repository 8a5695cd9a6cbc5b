"""HTTP routes of the audit chain: verify it and read it."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse

from consentry.audit.chain import proofs, repository, service
from consentry.audit.chain.models import (
    AuditEntryMetadata,
    AuditEntryOut,
    AuditEntryPage,
    ChainReport,
    CheckpointOut,
    Jwks,
    TraceOut,
)
from consentry.audit.v1 import audit_pb2
from consentry.eventing import tracing
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
            metadata=_metadata(row["entry"]),
        )
        for row in rows
    ]
    return AuditEntryPage(
        entries=items, next_after_seq=items[-1].seq if len(items) == limit else None
    )


def _metadata(entry: bytes) -> AuditEntryMetadata:
    """The metadata held in stored entry bytes (the trace, if the event had one)."""
    traced = tracing.parse(audit_pb2.AuditEntry.FromString(entry).traceparent)
    if traced is None:
        return AuditEntryMetadata()
    return AuditEntryMetadata(
        trace=TraceOut(
            traceparent=traced.traceparent, trace_id=traced.trace_id, parent_id=traced.parent_id
        )
    )


@router.get(
    "/checkpoints/latest",
    response_model=CheckpointOut,
    responses={404: {"description": "`no-checkpoint`: the chain has no signed checkpoint yet"}},
)
async def latest_checkpoint(request: Request, principal: AuditRead) -> CheckpointOut:
    """The newest signed checkpoint of the caller's tenant chain."""
    async with _pool(request).acquire() as conn:
        document = await _proof(proofs.checkpoint(conn, principal.tenant_id, None), "no-checkpoint")
    return CheckpointOut(**document)


@router.get("/keys", response_model=Jwks)
async def keys(request: Request) -> Jwks:
    """The public keys that sign checkpoints, as a JWKS (public: no API key needed)."""
    async with _pool(request).acquire() as conn:
        return Jwks.model_validate(await proofs.key_set(conn))


@router.get("/entries/{seq}/inclusion")
async def inclusion_proof(
    request: Request,
    principal: AuditRead,
    seq: Annotated[int, Path(ge=1)],
    tree_size: Annotated[
        int | None, Query(ge=1, description="a checkpoint's size; default newest")
    ] = None,
) -> dict[str, Any]:
    """An inclusion proof of one entry against a signed checkpoint (format inclusion.v1)."""
    async with _pool(request).acquire() as conn:
        return await _proof(proofs.inclusion(conn, principal.tenant_id, seq, tree_size))


@router.get(
    "/consistency",
    responses={404: {"description": "`proof-not-available`: no checkpoint of such a size"}},
)
async def consistency_proof(
    request: Request,
    principal: AuditRead,
    old_size: Annotated[int, Query(ge=1, description="the older checkpoint's size")],
    new_size: Annotated[
        int | None, Query(ge=1, description="default: the newest checkpoint")
    ] = None,
) -> dict[str, Any]:
    """A consistency proof between two signed checkpoints (consentry.audit.consistency.v1)."""
    async with _pool(request).acquire() as conn:
        return await _proof(proofs.consistency(conn, principal.tenant_id, old_size, new_size))


@router.get("/subjects/{subject_ref}/bundle")
async def proof_of_consent(
    request: Request,
    principal: AuditRead,
    subject_ref: Annotated[str, Path(pattern=r"^[0-9a-f]{64}$")],
) -> dict[str, Any]:
    """A subject's proof-of-consent bundle, verifiable offline (consentry.audit.bundle.v1)."""
    async with _pool(request).acquire() as conn:
        return await _proof(proofs.bundle(conn, principal.tenant_id, subject_ref))


@router.get("/export", response_class=StreamingResponse)
async def export(request: Request, principal: AuditRead) -> StreamingResponse:
    """The caller's whole chain with every checkpoint, as JSON Lines (consentry.audit.export.v1)."""

    async def lines() -> AsyncIterator[str]:
        async with (
            _pool(request).acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            async for line in proofs.export_lines(conn, principal.tenant_id):
                yield line

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def _proof(
    pending: Awaitable[dict[str, Any]], slug: str = "proof-not-available"
) -> dict[str, Any]:
    try:
        return await pending
    except proofs.ProofError as exc:
        raise Problem(404, slug, "Nothing to prove that with", str(exc)) from None
