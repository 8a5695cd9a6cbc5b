"""Secrets at rest: tenant secrets are sealed (AES-256-GCM) under the service's master key.

The master key comes from `CONSENTRY_CONSENT_MASTER_KEY` (32 bytes, standard base64); the
sealing itself is `consentry.eventing.sealing`. In development and test a well-known key is
the default; elsewhere it is refused and a real one must be set (a KMS can wrap it in
production).
"""

from __future__ import annotations

import base64

from pydantic import Field, SecretStr, model_validator

from consentry.eventing.sealing import Sealer, SealingError, parse_key
from consentry.eventing.settings import ConsentrySettings

__all__ = ["DEV_MASTER_KEY", "MasterKeySettings", "Sealer", "SealingError"]

# Well-known, for development and tests only (refused elsewhere).
DEV_MASTER_KEY = "ZGV2ZWxvcG1lbnQtb25seS1tYXN0ZXIta2V5LTMyYiE="


class MasterKeySettings(ConsentrySettings):
    """The master key that seals tenant secrets in the consent database."""

    consent_master_key: SecretStr = Field(
        default=SecretStr(DEV_MASTER_KEY),
        description="32 random bytes, base64; seals tenant secrets at rest",
    )

    @model_validator(mode="after")
    def _check_master_key(self) -> MasterKeySettings:
        parse_key(
            self.consent_master_key.get_secret_value(),
            name="consent_master_key",
            environment=self.environment,
            dev_value=DEV_MASTER_KEY,
        )
        return self

    def sealer(self) -> Sealer:
        """A sealer with this master key."""
        return Sealer(base64.b64decode(self.consent_master_key.get_secret_value()))
