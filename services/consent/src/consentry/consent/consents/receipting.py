"""The signed receipt of a capture: what it recorded (or found already recorded), signed.

One receipt covers every purpose of the call, with the state each purpose is in after it
(a decision equal to the current one is still stated: the receipt attests the state the
subject chose). Its id is the `receipt_id` stored on the ledger rows the call wrote.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import UUID

from consentry.consent.consents.capture import CaptureOutcome
from consentry.consent.policies.catalogue import PolicyCache
from consentry.consent.receipts.models import ReceiptDecision, ReceiptFacts
from consentry.consent.receipts.service import ReceiptSigner

# tenant id -> the controller's (tenant's) name
ControllerLookup = Callable[[UUID], Awaitable[str]]


class ReceiptIssuer:
    """Builds and signs the receipt of each capture."""

    def __init__(
        self,
        signer: ReceiptSigner,
        policies: PolicyCache,
        controller: ControllerLookup,
    ) -> None:
        self._signer = signer
        self._policies = policies
        self._controller = controller

    async def issue(self, outcome: CaptureOutcome) -> str:
        """The compact JWS receipt of `outcome`."""
        capture = outcome.capture
        tenant_id = capture.tenant_id
        rules = await self._policies.get(tenant_id)
        decisions = tuple(
            ReceiptDecision(
                purpose=state.purpose,
                status=state.status,
                legal_basis=rules.purpose(state.purpose).legal_basis.value
                if rules.has_purpose(state.purpose)
                else None,
                consent_type="EXPLICIT",
            )
            for state in outcome.states
        )
        version = rules.version(capture.policy_version) if capture.policy_version else None
        facts = ReceiptFacts(
            receipt_id=capture.receipt_id,
            tenant_id=tenant_id,
            controller=await self._controller(tenant_id),
            subject_ref=capture.subject_ref,
            decisions=decisions,
            policy_version=capture.policy_version,
            policy_url=version.url if version else None,
            method=capture.method,
            source=capture.source,
            occurred_at=capture.occurred_at,
            recorded_at=outcome.recorded_at,
            subject_version=outcome.subject_version,
        )
        return await self._signer.sign(facts)
