"""The tenant directory (docs/adr/0008-tenant-directory.md): the consent service announces
tenants and API keys on `consentry.tenant.v1`; other services keep a replica.

Subject references are the same in every service: `pseudonymise(subject key, identifier)`.
A tenant's subject key (the HMAC key of its subject references) travels wrapped under the
directory key, which every service that derives subject references shares
(`CONSENTRY_DIRECTORY_KEY`; a well-known key in development and test only).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from collections.abc import Iterable
from uuid import UUID

from pydantic import Field, SecretStr, model_validator

from consentry.eventing.sealing import Sealer, parse_key
from consentry.eventing.settings import ConsentrySettings

# Well-known, for development and tests only (refused elsewhere).
DEV_DIRECTORY_KEY = "ZGV2ZWxvcG1lbnQtb25seS1kaXJlY3Rvcnkta2V5ISE="


def normalise_subject_id(subject_id: str) -> str:
    """Unicode NFC, surrounding whitespace removed, e-mail addresses case-folded."""
    value = unicodedata.normalize("NFC", subject_id).strip()
    return value.casefold() if "@" in value else value


def pseudonymise_many(subject_key: bytes, subject_ids: Iterable[str]) -> list[str]:
    """`pseudonymise` for many identifiers (the keyed HMAC state is prepared once)."""
    keyed = hmac.new(subject_key, digestmod=hashlib.sha256)
    refs = []
    for subject_id in subject_ids:
        mac = keyed.copy()
        mac.update(normalise_subject_id(subject_id).encode())
        refs.append(mac.hexdigest())
    return refs


def pseudonymise(subject_key: bytes, subject_id: str) -> str:
    """The subject's pseudonymous reference: hex HMAC-SHA256 of the normalised identifier."""
    normalised = normalise_subject_id(subject_id).encode()
    return hmac.new(subject_key, normalised, hashlib.sha256).hexdigest()


def subject_key_context(tenant_id: UUID | str) -> str:
    """The sealing context (associated data) of a tenant's subject key."""
    return f"tenant:{tenant_id}:subject-key"


class DirectoryKeySettings(ConsentrySettings):
    """The directory key: wraps tenant subject keys on the tenant topic (ADR 0008). The consent
    service (which wraps) and every service that derives subject references (which unwraps)
    share it."""

    directory_key: SecretStr = Field(
        default=SecretStr(DEV_DIRECTORY_KEY),
        description="32 random bytes, base64, the same in every service; wraps tenant subject "
        "keys announced on the tenant topic",
    )

    @model_validator(mode="after")
    def _check_directory_key(self) -> DirectoryKeySettings:
        parse_key(
            self.directory_key.get_secret_value(),
            name="directory_key",
            environment=self.environment,
            dev_value=DEV_DIRECTORY_KEY,
        )
        return self

    def directory_sealer(self) -> Sealer:
        """A sealer with the directory key."""
        return Sealer(base64.b64decode(self.directory_key.get_secret_value()))
