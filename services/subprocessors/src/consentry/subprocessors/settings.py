"""Settings of the subprocessors service's processes (environment, `CONSENTRY_` prefix)."""

from __future__ import annotations

import base64

from pydantic import AnyHttpUrl, Field, SecretStr, ValidationInfo, field_validator

from consentry.eventing.replica import DirectoryFollowerSettings
from consentry.eventing.sealing import Sealer, parse_key
from consentry.eventing.settings import (
    ConsentrySettings,
    DatabaseSettings,
    Environment,
    KafkaSettings,
)
from consentry.httpapi.keys import ApiKeySettings
from consentry.httpapi.service import ServiceHttpSettings

# Well-known, for development and tests only (refused elsewhere).
DEV_SUBPROCESSORS_MASTER_KEY = "ZGV2LW9ubHktc3VicHJvY2Vzc29ycy1tYXN0ZXItayE="
# Standard Webhooks' own tolerance (the `standardwebhooks` library refuses anything older).
MAX_TIMESTAMP_TOLERANCE_SECONDS = 300


class SubprocessorsKeySettings(ConsentrySettings):
    """The master key that seals the recipients' webhook signing secrets."""

    subprocessors_master_key: SecretStr = Field(
        default=SecretStr(DEV_SUBPROCESSORS_MASTER_KEY),
        description="32 random bytes, base64; seals the recipients' signing secrets",
    )

    @field_validator("subprocessors_master_key")
    @classmethod
    def _check_master_key(cls, key: SecretStr, info: ValidationInfo) -> SecretStr:
        # A field validator (not a model validator), so the error names the variable.
        parse_key(
            key.get_secret_value(),
            name="subprocessors_master_key",
            environment=info.data.get("environment", Environment.PRODUCTION),
            dev_value=DEV_SUBPROCESSORS_MASTER_KEY,
        )
        return key

    def sealer(self) -> Sealer:
        """A sealer with the master key."""
        return Sealer(base64.b64decode(self.subprocessors_master_key.get_secret_value()))

    @property
    def loopback_http_allowed(self) -> bool:
        """Plain-http webhook URLs on loopback are accepted in development and test only."""
        return self.environment in (Environment.DEVELOPMENT, Environment.TEST)


class ApiSettings(ServiceHttpSettings, ApiKeySettings, SubprocessorsKeySettings):
    """The subprocessors HTTP API (the registry, delivery reports and the acknowledgement
    callback)."""

    secret_rotation_grace_seconds: float = Field(
        default=24 * 3600.0,
        ge=0,
        le=30 * 24 * 3600.0,
        description="after a rotation, how long notices are also signed with the previous "
        "secret and acknowledgements signed with it are accepted",
    )
    ack_tolerance_seconds: int = Field(
        default=MAX_TIMESTAMP_TOLERANCE_SECONDS,
        ge=1,
        le=MAX_TIMESTAMP_TOLERANCE_SECONDS,
        description="how far an acknowledgement's webhook-timestamp may be from now",
    )


class DirectorySettings(DirectoryFollowerSettings):
    """The directory follower: tenants and API keys from the tenant topic (ADR 0008). No
    master or directory key: it stores no secret and opens no subject key."""

    directory_group_id: str = "subprocessors-directory"


class SenderSettings(DatabaseSettings, SubprocessorsKeySettings):
    """The sender: posts due deliveries to the recipients, retries, dead-letters."""

    public_url: AnyHttpUrl = Field(
        default=AnyHttpUrl("http://127.0.0.1:8000"),
        description="the base URL recipients reach this service's API at; the notices' "
        "`ack_url` is <public_url>/v1/acknowledgements",
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120, description="the whole of one attempt (connect to answer)"
    )
    webhook_proxy_url: AnyHttpUrl | None = Field(
        default=None,
        description="an HTTP proxy every webhook goes through (egress); unset: direct. The "
        "*_PROXY environment variables are not read",
    )
    retry_base_seconds: float = Field(
        default=5.0, gt=0, description="backoff before the 2nd attempt (full jitter, doubling)"
    )
    retry_cap_seconds: float = Field(
        default=3600.0, gt=0, description="the longest wait between two attempts"
    )
    retry_window_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="how long a notice is retried (and an acknowledgement awaited) before it "
        "is dead-lettered and flagged",
    )
    ack_resend_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="a notice delivered but not acknowledged is sent again (same webhook-id) "
        "after this long, until acknowledged or the retry window ends",
    )
    ack_tolerance_seconds: int = Field(
        default=MAX_TIMESTAMP_TOLERANCE_SECONDS,
        ge=1,
        le=MAX_TIMESTAMP_TOLERANCE_SECONDS,
        description="how far a signed 2xx answer's webhook-timestamp may be from now",
    )
    # Measured (bench.rights_erasure (a), 300 webhooks/s on a busy 2-core VM): with 16,
    # up to 10 % of new deliveries found no free slot and waited for the claim path
    # (p99 1.1-3.1 s before the first attempt); with 64 every one was posted at once.
    sender_concurrency: int = Field(
        default=64,
        ge=1,
        le=1024,
        description="webhooks in flight at once (raise it for many slow recipients)",
    )
    sender_poll_seconds: float = Field(
        default=0.5, gt=0, le=60, description="how often due retries are looked for"
    )
    max_response_bytes: int = Field(
        default=64 * 1024, ge=1024, description="most of a recipient's answer that is read"
    )

    @property
    def ack_url(self) -> str:
        """Where recipients acknowledge."""
        return str(self.public_url).rstrip("/") + "/v1/acknowledgements"

    @property
    def lease_seconds(self) -> float:
        """How long a claimed delivery is not claimed again: its attempt and the recording
        of the outcome fit in it; a crashed sender's claims lapse after it."""
        return self.webhook_timeout_seconds * 1.5 + 5.0


class NotifierSettings(SenderSettings, KafkaSettings):
    """The notifier (a faust worker): turns erasure requests and consent withdrawals into
    deliveries, which the `sender` command posts (or, with `notifier_sender`, a sender in the
    same process)."""

    notifier_group_id: str = Field(
        default="subprocessor-notifier",
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="the faust app id (consumer group) and inbox consumer name",
    )
    # Measured (bench.rights_erasure (a), 100 erasures/s, 3 recipients, 2-core VM): with the
    # posts in the notifier's own event loop its batches waited for them (p99 2.6 and 5.8 s
    # from the 202 to the last verified webhook); with the `sender` process posting,
    # 1.0-1.7 s in five of seven runs (docs/rights-requests.md).
    notifier_sender: bool = Field(
        default=False,
        description="also post the deliveries from the notifier process (for a deployment "
        "of one process); by default the `sender` command, run next to it, posts them",
    )
    notifier_batch_max: int = Field(
        default=500, ge=1, le=10_000, description="most events applied in one transaction"
    )
    notifier_batch_within: float = Field(
        default=0.2,
        gt=0,
        le=5,
        description="s the oldest event of a batch waits for the batch to fill (unless "
        "it is full before): longer means fuller batches (one transaction each) when the "
        "load is light, at most this much later; under load a batch forms while the "
        "previous one is applied",
    )
    notifier_fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="ms a fetch of the notifier may wait to fill (the webhooks' one broker "
        "hop); unset: CONSENTRY_KAFKA_FETCH_MAX_WAIT_MS",
    )
    notifier_commit_interval: float = Field(
        default=1.0, gt=0, le=60, description="how often acknowledged offsets are committed"
    )
    notifier_session_timeout: float = Field(
        default=10.0,
        ge=1,
        le=300,
        description="consumer group session timeout (the development broker holds a group "
        "join for half of it)",
    )
