"""Settings of the consent service's processes (environment variables, `CONSENTRY_` prefix)."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from consentry.consent.sealing import MasterKeySettings
from consentry.eventing.directory import DirectoryKeySettings
from consentry.eventing.settings import ConsentrySettings, DatabaseSettings, KafkaSettings
from consentry.httpapi.keys import ApiKeySettings
from consentry.httpapi.service import ServiceHttpSettings

# The development tenant of `make run` (the dev key's tenant unless configured otherwise).
_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")


class ErasureSettings(ConsentrySettings):
    """What an erasure request waits for (fixed per request when it is received) and the body
    limit of the bulk rights-request path."""

    erasure_services: str = Field(
        default="consent,preferences",
        description="comma-separated internal services whose ErasureCompleted each erasure "
        "request waits for",
    )
    erasure_await_recipients: bool = Field(
        default=True,
        description="erasure requests also wait for the subprocessor notifier's "
        "RecipientsSelected and every selected recipient's acknowledgement or dead letter",
    )
    rights_max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=64 * 1024,
        description="request body limit of POST /v1/rights-requests (100,000 subject ids)",
    )

    @field_validator("erasure_services")
    @classmethod
    def _services_listed(cls, value: str) -> str:
        names = [name.strip() for name in value.split(",") if name.strip()]
        if not names or any(not _SERVICE_NAME.match(name) for name in names):
            raise ValueError("a comma-separated list of service names, e.g. consent,preferences")
        return ",".join(dict.fromkeys(names))

    @property
    def expected_services(self) -> tuple[str, ...]:
        """The services erasure requests wait for, in order."""
        return tuple(self.erasure_services.split(","))


class ApiSettings(
    ServiceHttpSettings, ApiKeySettings, MasterKeySettings, DirectoryKeySettings, ErasureSettings
):
    """The consent HTTP API: its database, where it listens, the master key, API keys, and the
    directory key that wraps the subject keys of tenants it announces (ADR 0008)."""

    policy_cache_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="how long a tenant's purposes and policy versions are used without asking "
        "the database: a change made through another process reaches this one within this time",
    )

    capture_batch_max: int = Field(
        default=256,
        ge=1,
        le=10_000,
        description="most consent captures recorded in one shared transaction (group commit)",
    )
    capture_writers: int = Field(
        default=4,
        ge=1,
        le=64,
        description="transactions recording captures at the same time (each holds a "
        "connection of the pool while it writes)",
    )
    batch_check_max_body_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=64 * 1024,
        description="request body limit of POST /v1/checks and /v1/subject-refs (10,000 items)",
    )


class TenantAdminSettings(DatabaseSettings, MasterKeySettings, DirectoryKeySettings):
    """The tenant commands (create-tenant, create-api-key, publish-directory): the owner's DSN,
    the master key and the directory key."""


class PolicySchedulerSettings(DatabaseSettings):
    """The policy scheduler: activates policy versions whose effective instant has passed."""

    policy_scheduler_interval_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="how often to look for versions due"
    )
    policy_scheduler_batch_size: int = Field(
        default=1000, ge=1, le=100_000, description="subjects flagged per transaction"
    )


class RightsWorkerSettings(DatabaseSettings):
    """The `rights` worker: fans rights requests out and publishes deadline warnings."""

    rights_interval_seconds: float = Field(
        default=30.0, gt=0, le=3600, description="how often to look for work without a NOTIFY"
    )
    rights_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="subjects fanned out per transaction"
    )
    rights_concurrency: int = Field(
        default=4,
        ge=1,
        le=32,
        description="tenants whose requests are worked on at once (each tenant's in its own "
        "transactions, shared by its waiting requests; the pool must hold as many connections)",
    )
    rights_due_soon_days: int = Field(
        default=5, ge=0, le=30, description="days before the due day a request is 'due soon'"
    )


class RightsTrackerSettings(DatabaseSettings, KafkaSettings, MasterKeySettings):
    """The `rights-tracker` worker: records every service's and recipient's answer and
    completes requests, signing their certificates with the tenant's receipt key."""

    rights_tracker_group_id: str = Field(
        default="consent-rights-tracker", pattern=r"^[a-z][a-z0-9-]{0,62}$"
    )
    # A poll's records are spread over the partitions of its three topics (18 in the
    # dev stack) and applied in one transaction (`EventConsumer`). Measured
    # (bench.rights_erasure (b), 20,000 subjects, when each partition's share still had a
    # transaction of its own): the tracker finished 1.6 s after the last webhook with 2,000,
    # 4.7 s with 500. (2,000 was slower before the tracker's lookups became LATERAL ones:
    # PostgreSQL planned its bigger batches as hash joins that read rights_request_subjects
    # sequentially, 44 million rows in one 100,000-subject (b).)
    rights_tracker_max_records: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="records fetched per poll across partitions (applied in one "
        "transaction, then the offsets are committed once)",
    )
