"""Settings of the audit service's processes (environment variables, `CONSENTRY_` prefix)."""

from __future__ import annotations

import base64
import binascii

from pydantic import Field, SecretStr, field_validator, model_validator

from consentry.eventing.settings import DatabaseSettings, Environment, KafkaSettings
from consentry.httpapi.service import ServiceApiSettings

# The well-known development signing key `make run` uses; refused outside development/test.
DEV_SIGNING_KEY = "Z3XNQzSEBIoBrWruiiOqxE6MDT7qYrL7AEH9JlpaW8E="


class ApiSettings(ServiceApiSettings):
    """The audit HTTP API."""


class AppenderSettings(DatabaseSettings, KafkaSettings):
    """The audit appender: consumes every event topic, appends to the chain, checkpoints."""

    appender_group_id: str = "audit-appender"
    appender_batch_append: bool = Field(
        default=True,
        description="append each poll's batch with one audit_append_batch() call "
        "(false: one call per event, each in its own savepoint)",
    )
    appender_max_records: int = Field(
        default=2000, ge=1, description="records fetched per poll (across partitions): a batch"
    )
    appender_pipeline: int = Field(
        default=2,
        ge=1,
        description="batches in flight: the next one's append waits on the previous one's "
        "chain heads and runs as it commits (1: one batch at a time)",
    )
    appender_lanes: int = Field(
        default=2,
        ge=1,
        description="transactions that apply a batch side by side, each for a fixed share "
        "of the tenants (1: one transaction per batch)",
    )
    audit_signing_key: SecretStr = Field(
        description="base64 of the 32-byte Ed25519 seed that signs checkpoints"
    )
    audit_signing_key_id: str | None = Field(
        default=None, description="key id in checkpoints and the JWKS; default: from the public key"
    )
    audit_checkpoint_every: int = Field(
        default=1000, ge=1, description="entries between checkpoints"
    )
    audit_checkpoint_interval_seconds: float = Field(
        default=10.0, gt=0, description="longest wait before new entries are checkpointed"
    )

    @field_validator("audit_signing_key")
    @classmethod
    def _seed_is_32_bytes(cls, value: SecretStr) -> SecretStr:
        seed_bytes(value)
        return value

    @model_validator(mode="after")
    def _refuse_dev_key_outside_development(self) -> AppenderSettings:
        relaxed = self.environment in (Environment.DEVELOPMENT, Environment.TEST)
        if not relaxed and self.audit_signing_key.get_secret_value() == DEV_SIGNING_KEY:
            raise ValueError("the development signing key is refused outside development")
        return self


def seed_bytes(key: SecretStr) -> bytes:
    """The 32-byte Ed25519 seed in a base64 setting."""
    text = key.get_secret_value().strip()
    try:
        seed = base64.urlsafe_b64decode(text.replace("+", "-").replace("/", "_") + "==")
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(seed) != 32:
        raise ValueError("an Ed25519 seed is 32 bytes")
    return seed


class DatabaseOnlySettings(DatabaseSettings):
    """The command-line verifier."""
