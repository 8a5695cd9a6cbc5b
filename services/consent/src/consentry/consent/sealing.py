"""Secrets at rest: tenant secrets are sealed (AES-256-GCM) under the service's master key.

The master key comes from `CONSENTRY_CONSENT_MASTER_KEY` (32 bytes, standard base64). Each
sealed value is `version byte || 12-byte nonce || ciphertext+tag`; the associated data binds
it to its owner and use (e.g. `tenant:<id>:subject-key`), so a sealed value copied into
another row or another tenant fails to open. In development and test a well-known key is the
default; elsewhere it is refused and a real one must be set (a KMS can wrap it in production).
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import Field, SecretStr, model_validator

from consentry.eventing.settings import ConsentrySettings, Environment

# Well-known, for development and tests only (refused elsewhere).
DEV_MASTER_KEY = "ZGV2ZWxvcG1lbnQtb25seS1tYXN0ZXIta2V5LTMyYiE="
_VERSION = b"\x01"
_NONCE_BYTES = 12


class SealingError(ValueError):
    """A sealed value could not be opened: wrong key, wrong owner or tampered bytes."""


class MasterKeySettings(ConsentrySettings):
    """The master key that seals tenant secrets in the consent database."""

    consent_master_key: SecretStr = Field(
        default=SecretStr(DEV_MASTER_KEY),
        description="32 random bytes, base64; seals tenant secrets at rest",
    )

    @model_validator(mode="after")
    def _check_master_key(self) -> MasterKeySettings:
        value = self.consent_master_key.get_secret_value()
        try:
            key = base64.b64decode(value, validate=True)
        except binascii.Error:
            raise ValueError("consent_master_key must be base64") from None
        if len(key) != 32:
            raise ValueError("consent_master_key must decode to 32 bytes")
        relaxed = self.environment in (Environment.DEVELOPMENT, Environment.TEST)
        if value == DEV_MASTER_KEY and not relaxed:
            raise ValueError("the development master key is refused outside development; set one")
        return self

    def sealer(self) -> Sealer:
        """A sealer with this master key."""
        return Sealer(base64.b64decode(self.consent_master_key.get_secret_value()))


class Sealer:
    """Seals and opens small secrets with AES-256-GCM under one master key."""

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key is 32 bytes")
        self._aead = AESGCM(master_key)

    def seal(self, plaintext: bytes, *, context: str) -> bytes:
        """Encrypt `plaintext` bound to `context` (the associated data)."""
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, *, context: str) -> bytes:
        """Decrypt a value sealed for `context`; SealingError if it was not."""
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise SealingError("not a sealed value")
        nonce, ciphertext = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, ciphertext, context.encode())
        except InvalidTag:
            raise SealingError("sealed value does not open under this key and context") from None
