"""The event catalogue: every CloudEvents type consentry publishes, its topic and message.

A consumer decodes by `ce_type`; a type missing from the catalogue is a poison message.
`check` is a semantic validation beyond the wire format (protobuf accepts almost any bytes):
it returns a problem description, or '' when the message is valid for its envelope.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from consentry.audit.v1 import audit_pb2
from consentry.consent.v1 import consent_pb2, policy_pb2
from consentry.eventing import topics
from consentry.preferences.v1 import lists_pb2, preferences_pb2
from consentry.rights.v1 import rights_pb2
from consentry.subprocessors.v1 import subprocessors_pb2
from consentry.tenant.v1 import tenant_pb2

Check = Callable[[Message, str, str], str]


@dataclass(frozen=True)
class EventType:
    """One versioned event type: `ce_type` name, topic, protobuf message class and check."""

    name: str
    topic: str
    message: type[Message]
    validate: Check | None = None

    def check(self, message: Message, tenant_id: str, subject_ref: str) -> str:
        """Return a description of what is wrong with `message`, or ''."""
        return self.validate(message, tenant_id, subject_ref) if self.validate else ""


def _check_decision(message: Message, tenant_id: str, subject_ref: str) -> str:
    decision = getattr(message, "decision", None)
    if decision is None or not message.HasField("decision"):
        return "decision missing"
    if decision.tenant_id != tenant_id or decision.subject_ref != subject_ref:
        return "decision does not match ce_tenant/ce_subject"
    if not decision.purpose or not decision.policy_version:
        return "purpose and policy_version are required"
    if decision.subject_version < 1:
        return "subject_version must be >= 1"
    return ""


CONSENT_GIVEN = EventType(
    "consentry.consent.given.v1", topics.CONSENT, consent_pb2.ConsentGiven, _check_decision
)
CONSENT_WITHDRAWN = EventType(
    "consentry.consent.withdrawn.v1", topics.CONSENT, consent_pb2.ConsentWithdrawn, _check_decision
)


def _check_capture(message: Message, tenant_id: str, subject_ref: str) -> str:
    if getattr(message, "tenant_id", None) != tenant_id:
        return "tenant_id does not match ce_tenant"
    if getattr(message, "subject_ref", None) != subject_ref:
        return "subject_ref does not match ce_subject"
    if not getattr(message, "policy_version", "") or not len(getattr(message, "decisions", ())):
        return "policy_version and at least one decision are required"
    return ""


CONSENT_CAPTURE_REQUESTED = EventType(
    "consentry.consent.capture_requested.v1",
    topics.CONSENT_INTAKE,
    consent_pb2.ConsentCaptureRequested,
    _check_capture,
)

# Audit-topic events carry the subject `chain`: the key `<tenant>/chain` keeps a tenant's
# whole chain in order on one partition, so followers can verify it incrementally.
AUDIT_CHAIN_SUBJECT = "chain"


def _check_chain_event(message: Message, tenant_id: str, subject_ref: str) -> str:
    if getattr(message, "tenant_id", None) != tenant_id or subject_ref != AUDIT_CHAIN_SUBJECT:
        return "tenant_id does not match ce_tenant, or ce_subject is not 'chain'"
    hashes = [getattr(message, name, b"") for name in ("leaf_hash", "chain_hash", "root_hash")]
    if any(value and len(value) != 32 for value in hashes):
        return "hashes are 32 bytes"
    return ""


AUDIT_ENTRY_APPENDED = EventType(
    "consentry.audit.entry_appended.v1", topics.AUDIT, audit_pb2.EntryAppended, _check_chain_event
)
AUDIT_CHECKPOINT_SIGNED = EventType(
    "consentry.audit.checkpoint_signed.v1",
    topics.AUDIT,
    audit_pb2.CheckpointSigned,
    _check_chain_event,
)

CATALOGUE: dict[str, EventType] = {
    t.name: t
    for t in (
        CONSENT_GIVEN,
        CONSENT_WITHDRAWN,
        CONSENT_CAPTURE_REQUESTED,
        AUDIT_ENTRY_APPENDED,
        AUDIT_CHECKPOINT_SIGNED,
    )
}


def lookup(name: str) -> EventType | None:
    """The catalogued event type called `name`, or None."""
    return CATALOGUE.get(name)


# --- Policy (notice) versions and re-consent (services/consent/.../policies). Policy events
# carry the subject `policy`: the key `<tenant>/policy` keeps a tenant's policy history in
# order on one partition. Re-consent events carry the subject's own key.
POLICY_SUBJECT = "policy"


def _check_policy(message: Message, tenant_id: str, subject_ref: str) -> str:
    policy = getattr(message, "policy", None)
    if policy is None or not message.HasField("policy"):
        return "policy missing"
    if policy.tenant_id != tenant_id or subject_ref != POLICY_SUBJECT:
        return "policy.tenant_id does not match ce_tenant, or ce_subject is not 'policy'"
    if not policy.version or not policy.effective_on:
        return "version and effective_on are required"
    return ""


def _check_reconsent(message: Message, tenant_id: str, subject_ref: str) -> str:
    if getattr(message, "tenant_id", None) != tenant_id:
        return "tenant_id does not match ce_tenant"
    if getattr(message, "subject_ref", None) != subject_ref:
        return "subject_ref does not match ce_subject"
    if not getattr(message, "purpose", "") or not getattr(message, "policy_version", ""):
        return "purpose and policy_version are required"
    if getattr(message, "subject_version", 0) < 1:
        return "subject_version must be >= 1"
    return ""


POLICY_PUBLISHED = EventType(
    "consentry.consent.policy_published.v1",
    topics.CONSENT,
    policy_pb2.PolicyPublished,
    _check_policy,
)
POLICY_EFFECTIVE = EventType(
    "consentry.consent.policy_effective.v1",
    topics.CONSENT,
    policy_pb2.PolicyEffective,
    _check_policy,
)
CONSENT_RECONSENT_REQUIRED = EventType(
    "consentry.consent.reconsent_required.v1",
    topics.CONSENT,
    policy_pb2.ReconsentRequired,
    _check_reconsent,
)
CATALOGUE.update(
    {t.name: t for t in (POLICY_PUBLISHED, POLICY_EFFECTIVE, CONSENT_RECONSENT_REQUIRED)}
)


# --- The tenant directory (ADR 0008): the consent service announces tenants and API keys.
# Directory events carry the subject `tenant`: the key `<tenant>/tenant` keeps a tenant's
# directory history in order on one partition.
TENANT_SUBJECT = "tenant"


def _check_directory(message: Message, tenant_id: str, subject_ref: str) -> str:
    if getattr(message, "tenant_id", None) != tenant_id or subject_ref != TENANT_SUBJECT:
        return "tenant_id does not match ce_tenant, or ce_subject is not 'tenant'"
    if hasattr(message, "key_id") and not getattr(message, "key_id", ""):
        return "key_id is required"
    if isinstance(message, tenant_pb2.TenantProvisioned) and not message.wrapped_subject_key:
        return "wrapped_subject_key is required"
    if isinstance(message, tenant_pb2.ApiKeyIssued) and len(message.secret_sha256) != 32:
        return "secret_sha256 is 32 bytes"
    return ""


TENANT_PROVISIONED = EventType(
    "consentry.tenant.provisioned.v1", topics.TENANT, tenant_pb2.TenantProvisioned, _check_directory
)
API_KEY_ISSUED = EventType(
    "consentry.tenant.api_key_issued.v1", topics.TENANT, tenant_pb2.ApiKeyIssued, _check_directory
)
API_KEY_REVOKED = EventType(
    "consentry.tenant.api_key_revoked.v1",
    topics.TENANT,
    tenant_pb2.ApiKeyRevoked,
    _check_directory,
)


# --- Preferences and marketing lists (services/preferences).
def _check_subject_event(message: Message, tenant_id: str, subject_ref: str) -> str:
    if getattr(message, "tenant_id", None) != tenant_id:
        return "tenant_id does not match ce_tenant"
    if getattr(message, "subject_ref", None) != subject_ref:
        return "subject_ref does not match ce_subject"
    if getattr(message, "subject_version", 0) < 1:
        return "subject_version must be >= 1"
    return ""


def _check_preferences_updated(message: Message, tenant_id: str, subject_ref: str) -> str:
    problem = _check_subject_event(message, tenant_id, subject_ref)
    if problem:
        return problem
    changes = getattr(message, "changes", ())
    if not len(changes) or any(not c.topic or not c.channel for c in changes):
        return "at least one change, each with a topic and a channel"
    return ""


def _check_unsubscribed(message: Message, tenant_id: str, subject_ref: str) -> str:
    problem = _check_subject_event(message, tenant_id, subject_ref)
    if problem:
        return problem
    if not getattr(message, "topic", "") and not getattr(message, "all_marketing", False):
        return "a topic, or all_marketing"
    return ""


def _check_suppressed(message: Message, tenant_id: str, subject_ref: str) -> str:
    problem = _check_subject_event(message, tenant_id, subject_ref)
    if problem:
        return problem
    if getattr(message, "reason", 0) == 0:
        return "a suppression reason is required"
    return ""


PREFERENCES_UPDATED = EventType(
    "consentry.preferences.updated.v1",
    topics.PREFERENCES,
    preferences_pb2.PreferencesUpdated,
    _check_preferences_updated,
)
PREFERENCES_UNSUBSCRIBED = EventType(
    "consentry.preferences.unsubscribed.v1",
    topics.PREFERENCES,
    preferences_pb2.PreferencesUnsubscribed,
    _check_unsubscribed,
)
LIST_MEMBER_SUPPRESSED = EventType(
    "consentry.lists.member_suppressed.v1",
    topics.LISTS,
    lists_pb2.ListMemberSuppressed,
    _check_suppressed,
)
CATALOGUE.update(
    {
        t.name: t
        for t in (
            TENANT_PROVISIONED,
            API_KEY_ISSUED,
            API_KEY_REVOKED,
            PREFERENCES_UPDATED,
            PREFERENCES_UNSUBSCRIBED,
            LIST_MEMBER_SUPPRESSED,
        )
    }
)


# --- Rights requests (services/consent rights/) and subprocessor deliveries
# (services/subprocessors). Request-level events carry the subject `requests`: the key
# `<tenant>/requests` keeps a tenant's request history in order on one partition.
REQUESTS_SUBJECT = "requests"


def _check_subject_request(message: Message, tenant_id: str, subject_ref: str) -> str:
    if getattr(message, "tenant_id", None) != tenant_id:
        return "tenant_id does not match ce_tenant"
    if getattr(message, "subject_ref", None) != subject_ref:
        return "subject_ref does not match ce_subject"
    if not getattr(message, "request_id", "") and not isinstance(
        message,
        subprocessors_pb2.RecipientsSelected
        | subprocessors_pb2.DeliveryAcknowledged
        | subprocessors_pb2.DeliveryDeadLettered,
    ):
        return "request_id is required"
    if getattr(message, "service", None) == "":
        return "service is required"
    if getattr(message, "recipient_id", None) == "":
        return "recipient_id is required"
    return ""


def _check_request(message: Message, tenant_id: str, subject_ref: str) -> str:
    if getattr(message, "tenant_id", None) != tenant_id or subject_ref != REQUESTS_SUBJECT:
        return "tenant_id does not match ce_tenant, or ce_subject is not 'requests'"
    if not getattr(message, "request_id", ""):
        return "request_id is required"
    return ""


ERASURE_REQUESTED = EventType(
    "consentry.rights.erasure_requested.v1",
    topics.RIGHTS,
    rights_pb2.ErasureRequested,
    _check_subject_request,
)
ERASURE_COMPLETED = EventType(
    "consentry.rights.erasure_completed.v1",
    topics.RIGHTS_ANSWERS,
    rights_pb2.ErasureCompleted,
    _check_subject_request,
)
ACCESS_REQUESTED = EventType(
    "consentry.rights.access_requested.v1",
    topics.RIGHTS,
    rights_pb2.AccessRequested,
    _check_subject_request,
)
ACCESS_PART_READY = EventType(
    "consentry.rights.access_part_ready.v1",
    topics.RIGHTS_ANSWERS,
    rights_pb2.AccessPartReady,
    _check_subject_request,
)
REQUEST_DEADLINE = EventType(
    "consentry.rights.request_deadline.v1",
    topics.RIGHTS,
    rights_pb2.RequestDeadline,
    _check_request,
)
REQUEST_CLOSED = EventType(
    "consentry.rights.request_closed.v1", topics.RIGHTS, rights_pb2.RequestClosed, _check_request
)
RECIPIENTS_SELECTED = EventType(
    "consentry.subprocessor.recipients_selected.v1",
    topics.SUBPROCESSOR,
    subprocessors_pb2.RecipientsSelected,
    _check_subject_request,
)
DELIVERY_ACKNOWLEDGED = EventType(
    "consentry.subprocessor.delivery_acknowledged.v1",
    topics.SUBPROCESSOR,
    subprocessors_pb2.DeliveryAcknowledged,
    _check_subject_request,
)
DELIVERY_DEAD_LETTERED = EventType(
    "consentry.subprocessor.delivery_dead_lettered.v1",
    topics.SUBPROCESSOR,
    subprocessors_pb2.DeliveryDeadLettered,
    _check_subject_request,
)
CATALOGUE.update(
    {
        t.name: t
        for t in (
            ERASURE_REQUESTED,
            ERASURE_COMPLETED,
            ACCESS_REQUESTED,
            ACCESS_PART_READY,
            REQUEST_DEADLINE,
            REQUEST_CLOSED,
            RECIPIENTS_SELECTED,
            DELIVERY_ACKNOWLEDGED,
            DELIVERY_DEAD_LETTERED,
        )
    }
)
