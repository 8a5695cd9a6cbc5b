"""API-key authentication: a key identifies one tenant and carries scopes.

Keys come in `Authorization: Bearer <key>` or `X-API-Key: <key>`. A service provides a
`KeyResolver`; until full key management exists, `DevKeyResolver` accepts the single
development key from settings (refused outside development/test unless it is a strong secret).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Protocol
from uuid import UUID

from fastapi import Depends, Request

from consentry.httpapi.problems import Problem

ALL_SCOPES = frozenset({"consent:read", "consent:write", "policy:admin", "audit:read", "admin"})


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant the key belongs to and what it may do."""

    tenant_id: UUID
    scopes: frozenset[str]
    key_id: str


class KeyResolver(Protocol):
    """Turns a presented API key into a principal (or None when unknown or revoked)."""

    async def resolve(self, key: str) -> Principal | None:
        """Return the key's principal, or None."""
        ...


class DevKeyResolver:
    """Accepts one configured key for one tenant with every scope."""

    def __init__(self, key: str, tenant_id: UUID) -> None:
        self._digest = hashlib.sha256(key.encode()).digest()
        self._principal = Principal(tenant_id, ALL_SCOPES, key_id="dev")

    async def resolve(self, key: str) -> Principal | None:
        """Return the dev principal if `key` matches (constant-time comparison)."""
        presented = hashlib.sha256(key.encode()).digest()
        return self._principal if hmac.compare_digest(presented, self._digest) else None


def presented_key(request: Request) -> str | None:
    """The API key in the request headers, if any."""
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller must present a valid key that has `scope`."""

    async def dependency(request: Request) -> Principal:
        key = presented_key(request)
        challenge = {"WWW-Authenticate": 'Bearer realm="consentry"'}
        if key is None:
            raise Problem(401, "unauthenticated", "An API key is required", headers=challenge)
        resolver: KeyResolver = request.app.state.key_resolver
        principal = await resolver.resolve(key)
        if principal is None:
            raise Problem(401, "unauthenticated", "The API key is not valid", headers=challenge)
        if scope not in principal.scopes:
            raise Problem(403, "forbidden", f"The API key lacks the scope {scope}", scope=scope)
        return principal

    return dependency


ConsentRead = Annotated[Principal, Depends(require("consent:read"))]
ConsentWrite = Annotated[Principal, Depends(require("consent:write"))]
AuditRead = Annotated[Principal, Depends(require("audit:read"))]
