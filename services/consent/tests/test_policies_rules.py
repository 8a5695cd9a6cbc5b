"""The checks the consent write path calls (`TenantPolicies`), and which purposes changed."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from consentry.consent.policies.catalogue import PolicyCache, TenantPolicies
from consentry.consent.policies.models import VersionInfo, changed_purposes, notice_digest
from consentry.consent.purposes.models import LegalBasis, PurposeInfo
from consentry.eventing.db import Pool
from consentry.httpapi.problems import Problem

TENANT = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
JAN = datetime(2026, 1, 1, tzinfo=UTC)
MAR = datetime(2026, 3, 1, tzinfo=UTC)
MAY = datetime(2026, 5, 1, tzinfo=UTC)
NOW = datetime(2026, 4, 1, tzinfo=UTC)  # v2 in force, v3 announced

PURPOSES = {
    "required": PurposeInfo("required", LegalBasis.LEGITIMATE_INTEREST, always_on=True),
    "performance": PurposeInfo("performance", LegalBasis.CONSENT, always_on=False),
    "targeting": PurposeInfo("targeting", LegalBasis.CONSENT, always_on=False),
    "billing": PurposeInfo("billing", LegalBasis.CONTRACT, always_on=False),
}
A, B, C = notice_digest("a"), notice_digest("b"), notice_digest("c")
VERSIONS = [
    VersionInfo("v1", JAN, {"required": A, "performance": A, "targeting": A}),
    VersionInfo("v2", MAR, {"required": A, "performance": B, "targeting": A}),  # performance
    VersionInfo("v3", MAY, {"required": A, "performance": B, "targeting": C}),  # targeting
]


@pytest.fixture
def policies() -> TenantPolicies:
    return TenantPolicies(TENANT, PURPOSES, list(reversed(VERSIONS)))


def refused(policies: TenantPolicies, purpose: str, version: str, withdrawing: bool) -> str:
    with pytest.raises(Problem) as problem:
        policies.check_decision(purpose, version, withdrawing, at=NOW)
    assert problem.value.status == 422
    return problem.value.slug


def test_current_version_follows_the_effective_instants(policies: TenantPolicies) -> None:
    assert policies.current_version(at=JAN - timedelta(seconds=1)) is None
    assert policies.current_version(at=JAN) == "v1"
    assert policies.current_version(at=NOW) == "v2"
    assert policies.current_version(at=MAY) == "v3"


def test_giving_consent_under_the_version_in_force(policies: TenantPolicies) -> None:
    info = policies.check_decision("performance", "v2", withdrawing=False, at=NOW)
    assert info.requires_consent
    assert not info.always_on


def test_unknown_purposes_and_versions(policies: TenantPolicies) -> None:
    assert refused(policies, "nonsense", "v2", withdrawing=False) == "unknown-purpose"
    assert refused(policies, "nonsense", "v2", withdrawing=True) == "unknown-purpose"
    assert refused(policies, "performance", "v9", withdrawing=False) == "unknown-policy-version"
    assert refused(policies, "performance", "v9", withdrawing=True) == "unknown-policy-version"
    assert policies.requires_consent("nonsense") is None
    assert policies.requires_consent("billing") is False
    assert policies.has_purpose("targeting")
    with pytest.raises(Problem) as problem:
        policies.purpose("nonsense")
    assert problem.value.extensions == {"purposes": ["nonsense"]}


def test_required_cannot_be_withdrawn(policies: TenantPolicies) -> None:
    assert refused(policies, "required", "v2", withdrawing=True) == "purpose-not-withdrawable"
    assert policies.check_decision("required", "v2", withdrawing=False, at=NOW).always_on


def test_a_version_must_cover_the_purpose_consented_to(policies: TenantPolicies) -> None:
    assert refused(policies, "billing", "v2", withdrawing=False) == "purpose-not-in-policy"
    # Withdrawing is never refused for the notice it cites.
    assert policies.check_decision("billing", "v2", withdrawing=True, at=NOW).name == "billing"


def test_consent_under_a_superseded_notice_is_refused_only_for_changed_purposes(
    policies: TenantPolicies,
) -> None:
    with pytest.raises(Problem) as problem:
        policies.check_decision("performance", "v1", withdrawing=False, at=NOW)
    assert problem.value.slug == "policy-version-superseded"
    assert problem.value.extensions["current_policy_version"] == "v2"
    # targeting's notice did not change in v2: consent under v1 is still informed consent.
    assert policies.check_decision("targeting", "v1", withdrawing=False, at=NOW)
    # A withdrawal citing the old version is accepted.
    assert policies.check_decision("performance", "v1", withdrawing=True, at=NOW)
    # Once v3 is in force, targeting under v2 is superseded too.
    with pytest.raises(Problem) as later:
        policies.check_decision("targeting", "v2", withdrawing=False, at=MAY)
    assert later.value.slug == "policy-version-superseded"


def test_consent_to_an_announced_version_is_accepted_early(policies: TenantPolicies) -> None:
    assert policies.check_decision("targeting", "v3", withdrawing=False, at=NOW)


def test_changed_purposes() -> None:
    assert changed_purposes(None, {"a": A}) == []
    assert changed_purposes({"a": A, "b": B}, {"a": A, "b": B}) == []
    assert changed_purposes({"a": A, "b": B}, {"a": C, "c": C}) == ["a", "b", "c"]


async def test_the_cache_loads_once_per_ttl_and_forgets_on_invalidate() -> None:
    """The cache's timing with an in-memory loader (the database loader is exercised by
    test_policies_api.py)."""
    loads: list[uuid.UUID] = []

    async def load(pool: Pool, tenant_id: uuid.UUID) -> TenantPolicies:
        loads.append(tenant_id)
        await asyncio.sleep(0.01)
        return TenantPolicies(tenant_id, PURPOSES, VERSIONS)

    clock = [100.0]
    no_pool: Pool = None  # type: ignore[assignment]  # the loader below never uses it
    cache = PolicyCache(no_pool, ttl_seconds=5, clock=lambda: clock[0], loader=load)

    first, second = await asyncio.gather(cache.get(TENANT), cache.get(TENANT))
    assert first is second
    assert loads == [TENANT]  # concurrent callers share one load
    clock[0] += 4.9
    assert await cache.get(TENANT) is first
    clock[0] += 0.2
    assert await cache.get(TENANT) is not first
    assert len(loads) == 2
    cache.invalidate(TENANT)
    await cache.get(TENANT)
    assert len(loads) == 3
