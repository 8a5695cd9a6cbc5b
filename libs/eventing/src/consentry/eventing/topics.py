"""Topic names: one topic per event family, versioned; one dead-letter topic per consumer."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

CONSENT = "consentry.consent.v1"
# Product code's consent captures to the consent service (instead of HTTP).
CONSENT_INTAKE = "consentry.consent.intake.v1"
AUDIT = "consentry.audit.v1"
# The tenant directory: tenants and API keys announced by the consent service (ADR 0008).
TENANT = "consentry.tenant.v1"
PREFERENCES = "consentry.preferences.v1"
# The marketing-list processor's events for sending platforms (suppressions).
LISTS = "consentry.lists.v1"
# Rights requests (erasure, access, ...): the fan-out to every service, deadlines, closing.
RIGHTS = "consentry.rights.v1"
# The services' answers to rights requests (erased, export part ready), read by the consent
# service's rights tracker: apart from the requests, so that the services answering requests
# read one record per subject, not four (ADR 0014).
RIGHTS_ANSWERS = "consentry.rights.answers.v1"
# Deliveries to subprocessors (recipients) and their acknowledgements.
SUBPROCESSOR = "consentry.subprocessor.v1"

_CONSUMER_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


def dead_letter_topic(consumer: str) -> str:
    """Name of the dead-letter topic of one consumer (e.g. `consentry.dlq.audit-appender`)."""
    if not _CONSUMER_NAME.match(consumer):
        raise ValueError(f"invalid consumer name {consumer!r}")
    return f"consentry.dlq.{consumer}"


@dataclass(frozen=True)
class TopicSpec:
    """A topic to create: name, partitions, replication and topic configs."""

    name: str
    partitions: int = 6
    replication_factor: int = 1
    configs: dict[str, str] = field(default_factory=dict)
