"""API-key authentication: a key identifies one tenant and carries scopes.

Keys come in `Authorization: Bearer <key>` or `X-API-Key: <key>`. A service provides a
`KeyResolver` as `app.state.key_resolver`: `DevKeyResolver` accepts the single development
key from settings (refused outside development/test unless it is a strong secret); a service
with key management (the consent service's `DbKeyResolver`) chains its own resolver in front
of it with `ChainKeyResolver`.

Scopes (`Scope`): `consent:read`, `consent:write`, `policy:admin`, `audit:read`,
`preferences:read`, `preferences:write`, `preferences:admin`, `lists:read`, `rights:read`,
`rights:write`, `subprocessors:read`, `subprocessors:admin`, `admin`.
No scope implies another: `admin` is tenant administration (API keys, key rotation) and does
not by itself read or write consents. An `admin` key can create keys with any scope, so it is
the tenant's most powerful credential; every request still needs a key holding the scope of
its operation, which keeps everyday keys least-privileged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Protocol, runtime_checkable
from uuid import UUID

from fastapi import Depends, Request

from consentry.httpapi.problems import Problem
from consentry.httpapi.ratelimit import KeyRateLimiter


class Scope(StrEnum):
    """What a key may do; an operation names the one scope it needs."""

    CONSENT_READ = "consent:read"
    CONSENT_WRITE = "consent:write"
    POLICY_ADMIN = "policy:admin"
    AUDIT_READ = "audit:read"
    PREFERENCES_READ = "preferences:read"
    PREFERENCES_WRITE = "preferences:write"
    PREFERENCES_ADMIN = "preferences:admin"  # communication topics
    LISTS_READ = "lists:read"  # marketing lists and the suppression filter (sending systems)
    RIGHTS_READ = "rights:read"  # rights requests (erasure, access): status, deadlines
    RIGHTS_WRITE = "rights:write"  # file, verify, extend, reject rights requests
    SUBPROCESSORS_READ = "subprocessors:read"  # recipients and what they were told
    SUBPROCESSORS_ADMIN = "subprocessors:admin"  # the registry of recipients
    ADMIN = "admin"


ALL_SCOPES = frozenset(scope.value for scope in Scope)


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


@runtime_checkable
class CachingKeyResolver(Protocol):
    """A resolver that caches principals and can forget one key at once (on revocation)."""

    def forget(self, key_id: str) -> None:
        """Drop what is cached about `key_id`; the next use asks the store again."""
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


class ChainKeyResolver:
    """Asks each resolver in turn; the first principal wins."""

    def __init__(self, resolvers: Sequence[KeyResolver]) -> None:
        self._resolvers = tuple(resolvers)

    async def resolve(self, key: str) -> Principal | None:
        """The first resolver's principal for `key`, or None when none knows it."""
        for resolver in self._resolvers:
            principal = await resolver.resolve(key)
            if principal is not None:
                return principal
        return None

    def forget(self, key_id: str) -> None:
        """Forget `key_id` in every caching resolver of the chain."""
        for resolver in self._resolvers:
            if isinstance(resolver, CachingKeyResolver):
                resolver.forget(key_id)


def presented_key(request: Request) -> str | None:
    """The API key in the request headers, if any."""
    authorization = request.headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


async def authenticate(request: Request) -> Principal:
    """A FastAPI dependency: the caller must present a valid key (any scope)."""
    key = presented_key(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="consentry"'}
    if key is None:
        raise Problem(401, "unauthenticated", "An API key is required", headers=challenge)
    resolver: KeyResolver = request.app.state.key_resolver
    principal = await resolver.resolve(key)
    if principal is None:
        raise Problem(401, "unauthenticated", "The API key is not valid", headers=challenge)
    limiter: KeyRateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is not None:
        limiter.check(principal.key_id)
    return principal


def require(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency: the caller must present a valid key that has `scope`.

    The dependency carries the scope as its attribute `scope`, so tests and tools can find
    which scope each route needs.
    """
    name = str(scope)  # a Scope member or its plain string value

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if name not in principal.scopes:
            raise Problem(403, "forbidden", f"The API key lacks the scope {name}", scope=name)
        return principal

    dependency.scope = name  # type: ignore[attr-defined]
    return dependency


Authenticated = Annotated[Principal, Depends(authenticate)]
ConsentRead = Annotated[Principal, Depends(require(Scope.CONSENT_READ))]
ConsentWrite = Annotated[Principal, Depends(require(Scope.CONSENT_WRITE))]
PolicyAdmin = Annotated[Principal, Depends(require(Scope.POLICY_ADMIN))]
AuditRead = Annotated[Principal, Depends(require(Scope.AUDIT_READ))]
PreferencesRead = Annotated[Principal, Depends(require(Scope.PREFERENCES_READ))]
PreferencesWrite = Annotated[Principal, Depends(require(Scope.PREFERENCES_WRITE))]
PreferencesAdmin = Annotated[Principal, Depends(require(Scope.PREFERENCES_ADMIN))]
ListsRead = Annotated[Principal, Depends(require(Scope.LISTS_READ))]
RightsRead = Annotated[Principal, Depends(require(Scope.RIGHTS_READ))]
RightsWrite = Annotated[Principal, Depends(require(Scope.RIGHTS_WRITE))]
SubprocessorsRead = Annotated[Principal, Depends(require(Scope.SUBPROCESSORS_READ))]
SubprocessorsAdmin = Annotated[Principal, Depends(require(Scope.SUBPROCESSORS_ADMIN))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
