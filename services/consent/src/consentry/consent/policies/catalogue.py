"""A tenant's purposes and policy versions as the consent write path checks them: cached, pure.

The write path handles thousands of decisions a second, so it never reads purposes or
versions from the database itself: `PolicyCache(pool, ttl_seconds)` (one per API process, at
`app.state.policies`) keeps each tenant's `TenantPolicies` in memory for `ttl_seconds`
(`CONSENTRY_POLICY_CACHE_SECONDS`, 5 s) and forgets a tenant at once when this process
publishes a version or changes a purpose; other processes see such a change within the TTL.

    policies = await request.app.state.policies.get(tenant_id)   # or policy_cache(request)
    info = policies.check_decision("performance", "2026-09", withdrawing=False)
    info.requires_consent, info.always_on

`TenantPolicies` (no I/O):

- `purpose(name) -> PurposeInfo`, 422 `unknown-purpose` when the tenant has no such purpose
  (422 rather than 404: in the write path the purpose is a value of the decision, and the
  decision is what is refused). `has_purpose(name)`, `requires_consent(name) -> bool | None`
  (None: unknown) answer without raising.
- `check_decision(purpose, policy_version, withdrawing, at=None) -> PurposeInfo` raises, in
  this order: 422 `unknown-purpose`; 422 `purpose-not-withdrawable` (withdrawing an always-on
  purpose such as `required`); 422 `unknown-policy-version` (never published by the tenant);
  and, for giving consent only, 422 `purpose-not-in-policy` (the version does not cover the
  purpose) and 422 `policy-version-superseded` (a later version is in force at `at` whose
  notice for the purpose differs: consent must be given to the notice in force; extension
  `current_policy_version`). A withdrawal is never refused for which notice it cites: it must
  always be possible to withdraw (GDPR Art. 7(3)). Announced versions not yet in force are
  accepted: a subject may consent to the coming notice.
- `current_version(at=None) -> str | None`: the version in force (latest effective instant
  not after `at`, default now), None before the first.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from fastapi import Request

from consentry.consent.db import tenant_transaction
from consentry.consent.policies import repository
from consentry.consent.policies.models import VersionInfo
from consentry.consent.purposes.models import LegalBasis, PurposeInfo
from consentry.eventing.db import Pool
from consentry.httpapi.problems import Problem


class TenantPolicies:
    """One tenant's purposes and policy versions, and the checks of a decision against them."""

    def __init__(
        self, tenant_id: UUID, purposes: Mapping[str, PurposeInfo], versions: Sequence[VersionInfo]
    ) -> None:
        self.tenant_id = tenant_id
        self._purposes = dict(purposes)
        self._versions = sorted(versions, key=lambda v: v.effective_at)
        self._by_name = {v.version: v for v in self._versions}
        self._starts = [v.effective_at for v in self._versions]

    def has_purpose(self, name: str) -> bool:
        """Whether the tenant has the purpose."""
        return name in self._purposes

    def requires_consent(self, name: str) -> bool | None:
        """Whether the purpose rests on consent; None for an unknown purpose."""
        info = self._purposes.get(name)
        return None if info is None else info.requires_consent

    def purpose(self, name: str) -> PurposeInfo:
        """The purpose; 422 `unknown-purpose` if the tenant has none by that name."""
        info = self._purposes.get(name)
        if info is None:
            raise Problem(
                422,
                "unknown-purpose",
                "Unknown purpose",
                f"the tenant has no purpose named {name}",
                purposes=[name],
            )
        return info

    def version(self, version: str) -> VersionInfo:
        """A published version; 422 `unknown-policy-version` if there is none."""
        info = self._by_name.get(version)
        if info is None:
            raise Problem(
                422,
                "unknown-policy-version",
                "Unknown policy version",
                f"the tenant has not published policy version {version}",
                policy_version=version,
            )
        return info

    def _current(self, at: datetime | None) -> VersionInfo | None:
        index = bisect.bisect_right(self._starts, at or datetime.now(UTC))
        return self._versions[index - 1] if index else None

    def current_version(self, at: datetime | None = None) -> str | None:
        """The version in force at `at` (default now), or None before the first."""
        current = self._current(at)
        return None if current is None else current.version

    def check_decision(
        self, purpose: str, policy_version: str, withdrawing: bool, at: datetime | None = None
    ) -> PurposeInfo:
        """Raise the Problem that refuses the decision, or return the purpose (module doc)."""
        info = self.purpose(purpose)
        if withdrawing and info.always_on:
            raise Problem(
                422,
                "purpose-not-withdrawable",
                "This purpose cannot be withdrawn",
                f"{purpose} is always on (strictly necessary); it cannot be withdrawn",
                purpose=purpose,
            )
        version = self.version(policy_version)
        if withdrawing:
            return info
        if purpose not in version.notices:
            raise Problem(
                422,
                "purpose-not-in-policy",
                "The policy version does not cover this purpose",
                f"policy version {policy_version} has no notice for {purpose}",
                purpose=purpose,
                policy_version=policy_version,
            )
        current = self._current(at)
        if (
            current is not None
            and current.effective_at > version.effective_at
            and current.notices.get(purpose) != version.notices[purpose]
        ):
            raise Problem(
                422,
                "policy-version-superseded",
                "The policy version is superseded for this purpose",
                f"policy version {current.version} changed the notice for {purpose}; "
                "consent must be given to the notice in force",
                purpose=purpose,
                policy_version=policy_version,
                current_policy_version=current.version,
            )
        return info


async def load_policies(pool: Pool, tenant_id: UUID) -> TenantPolicies:
    """Read a tenant's purposes and versions (one tenant-scoped transaction)."""
    async with tenant_transaction(pool, tenant_id) as conn:
        purpose_rows = await repository.rule_purposes(conn, tenant_id=tenant_id)
        version_rows = await repository.rule_versions(conn, tenant_id=tenant_id)
    purposes = {
        row["name"]: PurposeInfo(row["name"], LegalBasis(row["legal_basis"]), row["always_on"])
        for row in purpose_rows
    }
    versions = [
        VersionInfo(
            row["version"],
            row["effective_at"],
            dict(zip(row["purposes"], map(bytes, row["digests"]), strict=True)),
            row["url"],
        )
        for row in version_rows
    ]
    return TenantPolicies(tenant_id, purposes, versions)


@dataclass(slots=True)
class _Entry:
    policies: TenantPolicies
    loaded_at: float


Loader = Callable[[Pool, UUID], Awaitable[TenantPolicies]]


class PolicyCache:
    """Each tenant's `TenantPolicies`, kept for `ttl_seconds`; one load at a time per tenant."""

    def __init__(
        self,
        pool: Pool,
        ttl_seconds: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        loader: Loader = load_policies,
    ) -> None:
        self._pool = pool
        self._ttl = ttl_seconds
        self._clock = clock
        self._load = loader
        self._entries: dict[UUID, _Entry] = {}
        self._locks: dict[UUID, asyncio.Lock] = {}
        self._generations: dict[UUID, int] = {}

    async def get(self, tenant_id: UUID) -> TenantPolicies:
        """The tenant's purposes and versions, at most `ttl_seconds` old."""
        entry = self._entries.get(tenant_id)
        if entry is not None and self._clock() - entry.loaded_at < self._ttl:
            return entry.policies
        lock = self._locks.setdefault(tenant_id, asyncio.Lock())
        async with lock:
            entry = self._entries.get(tenant_id)  # another task may have loaded it meanwhile
            if entry is not None and self._clock() - entry.loaded_at < self._ttl:
                return entry.policies
            generation = self._generations.get(tenant_id, 0)
            started = self._clock()
            policies = await self._load(self._pool, tenant_id)
            if self._generations.get(tenant_id, 0) == generation:  # not invalidated meanwhile
                self._entries[tenant_id] = _Entry(policies, started)
            return policies

    def invalidate(self, tenant_id: UUID) -> None:
        """Forget the tenant: the next `get` reads the database (after a publish or a PUT)."""
        self._generations[tenant_id] = self._generations.get(tenant_id, 0) + 1
        self._entries.pop(tenant_id, None)


def policy_cache(request: Request) -> PolicyCache:
    """The API process's policy cache (a FastAPI dependency)."""
    cache: PolicyCache = request.app.state.policies
    return cache
