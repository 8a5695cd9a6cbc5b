"""Settings of the preferences service's processes (environment variables, `CONSENTRY_` prefix)."""

from __future__ import annotations

import base64

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from consentry.eventing.directory import DirectoryKeySettings
from consentry.eventing.replica import DirectoryFollowerSettings
from consentry.eventing.sealing import Sealer, parse_key
from consentry.eventing.settings import ConsentrySettings, DatabaseSettings, KafkaSettings
from consentry.httpapi.keys import ApiKeySettings
from consentry.httpapi.service import ServiceHttpSettings

# Well-known, for development and tests only (refused elsewhere).
DEV_PREFERENCES_MASTER_KEY = "ZGV2LW9ubHktcHJlZmVyZW5jZXMtbWFzdGVyLWtleSE="


class PreferencesKeySettings(ConsentrySettings):
    """The master key that seals this service's tenant secrets (subject keys, KEKs, link keys)."""

    preferences_master_key: SecretStr = Field(
        default=SecretStr(DEV_PREFERENCES_MASTER_KEY),
        description="32 random bytes, base64; seals the preferences service's tenant secrets",
    )

    @model_validator(mode="after")
    def _check_master_key(self) -> PreferencesKeySettings:
        parse_key(
            self.preferences_master_key.get_secret_value(),
            name="preferences_master_key",
            environment=self.environment,
            dev_value=DEV_PREFERENCES_MASTER_KEY,
        )
        return self

    def sealer(self) -> Sealer:
        """A sealer with the master key."""
        return Sealer(base64.b64decode(self.preferences_master_key.get_secret_value()))


class ApiSettings(ServiceHttpSettings, ApiKeySettings, PreferencesKeySettings):
    """The preferences HTTP API (and its unsubscribe and preference-center pages)."""

    public_url: AnyHttpUrl | None = Field(
        default=None,
        description="the base URL people reach the unsubscribe and preference-center pages "
        "at (e.g. https://preferences.example.com); default: this process's own address",
    )
    unsubscribe_token_days: int = Field(
        default=365,
        ge=1,
        le=3650,
        description="how long a one-click unsubscribe link works (mail is read late)",
    )
    preference_token_days: int = Field(
        default=30, ge=1, le=365, description="how long a preference-center link works"
    )
    filter_max_refs: int = Field(
        default=100_000,
        ge=10_000,
        le=1_000_000,
        description="most subject refs in one POST /v1/lists/{topic}/filter call",
    )
    filter_max_body_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024 * 1024,
        description="request body limit of the suppression filter",
    )
    list_cache_max_refs: int = Field(
        default=500_000,
        ge=0,
        description="list members the suppression filter keeps in memory per API process "
        "(about 200 bytes each; larger lists are checked in the database; 0: never)",
    )


class DirectorySettings(DirectoryFollowerSettings, PreferencesKeySettings, DirectoryKeySettings):
    """The directory follower: tenants and API keys from the tenant topic."""

    directory_group_id: str = "preferences-directory"


class ConsentFollowerSettings(DatabaseSettings, KafkaSettings):
    """The consent follower: this service's copy of consent state from the consent topic."""

    consent_follower_group_id: str = "preferences-consent-follower"


class ListProcessorSettings(DatabaseSettings, KafkaSettings):
    """The marketing-list processor (a faust worker; docs/adr/0009-list-processor.md)."""

    list_processor_name: str = Field(
        default="list-processor",
        pattern=r"^[a-z][a-z0-9-]{0,62}$",
        description="consumer group, inbox consumer and dead-letter topic "
        "(consentry.dlq.<name>) of the processor",
    )
    list_processor_batch_size: int = Field(
        default=1000, ge=1, le=10_000, description="most events applied in one transaction"
    )
    list_processor_batch_wait_ms: int = Field(
        default=20,
        ge=1,
        le=5_000,
        description="how long a batch waits to fill before it is applied anyway",
    )
    list_processor_commit_interval_ms: int = Field(
        default=1000,
        ge=100,
        description="how often applied offsets are committed to Kafka (a restart re-reads "
        "at most this much, which the inbox makes harmless)",
    )
    list_processor_session_timeout_ms: int = Field(
        default=10_000,
        ge=3_000,
        description="consumer group session timeout: a dead member's partitions move "
        "after this long (the development broker also holds a join for half of it)",
    )
    list_processor_lag_log_seconds: float = Field(
        default=10.0, ge=0.1, description="how often the processor logs its lag and counters"
    )
    list_processor_fetch_min_bytes: int | None = Field(
        default=None,
        ge=1,
        description="bytes a fetch waits for (up to CONSENTRY_KAFKA_FETCH_MAX_WAIT_MS): more "
        "means fewer, fuller fetches under load; unset: CONSENTRY_KAFKA_FETCH_MIN_BYTES",
    )
