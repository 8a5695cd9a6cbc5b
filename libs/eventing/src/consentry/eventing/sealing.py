"""Secrets at rest: small secrets sealed with AES-256-GCM under a 32-byte key.

Each sealed value is `version byte || 12-byte nonce || ciphertext+tag`; the associated data
(`context`) binds it to its owner and use (e.g. `tenant:<id>:subject-key`), so a sealed value
copied into another row or another tenant fails to open. Services hold their master keys in
settings (`parse_key` checks one); development and test may use a well-known key, which
`parse_key` refuses elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import os
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from consentry.eventing.settings import Environment

_VERSION = b"\x01"
_NONCE_BYTES = 12
KEY_BYTES = 32
SEALED_KEY_BYTES = 1 + _NONCE_BYTES + KEY_BYTES + 16  # a sealed 32-byte key: 61 bytes
PART_INFO = b"consentry access export v1"


class SealingError(ValueError):
    """A sealed value could not be opened: wrong key, wrong owner or tampered bytes."""


def parse_key(value: str, *, name: str, environment: Environment, dev_value: str) -> bytes:
    """The 32-byte key in base64 `value` of the setting `name`; ValueError when it is not
    one, or when it is the well-known `dev_value` outside development and test."""
    try:
        key = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise ValueError(f"{name} must be base64") from None
    if len(key) != KEY_BYTES:
        raise ValueError(f"{name} must decode to 32 bytes")
    relaxed = environment in (Environment.DEVELOPMENT, Environment.TEST)
    if value == dev_value and not relaxed:
        raise ValueError(f"the development {name} is refused outside development; set one")
    return key


class Sealer:
    """Seals and opens small secrets with AES-256-GCM under one key."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("the sealing key is 32 bytes")
        self._aead = AESGCM(key)

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


# --- Access-export parts (docs/rights-requests.md): each service seals its part of a
# subject's export to the request's X25519 public key: ephemeral X25519 public key (32 bytes)
# || AES-256-GCM nonce (12) || ciphertext and tag; the key is HKDF-SHA256 of the shared
# secret (no salt, info `consentry access export v1`), the associated data
# `<tenant>/<request>/<service>`.


def associated_data(tenant_id: UUID, request_id: UUID, service: str) -> bytes:
    """What a part is bound to: `<tenant>/<request>/<service>`."""
    return f"{tenant_id}/{request_id}/{service}".encode()


def _part_key(shared: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=None, info=PART_INFO).derive(shared)


def seal_part(
    public_key: bytes, part: bytes, *, tenant_id: UUID, request_id: UUID, service: str
) -> bytes:
    """`part` sealed to the request's X25519 `public_key` (the format in the module doc)."""
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(public_key))
    nonce = os.urandom(12)
    ciphertext = AESGCM(_part_key(shared)).encrypt(
        nonce, part, associated_data(tenant_id, request_id, service)
    )
    ephemeral_public = ephemeral.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return ephemeral_public + nonce + ciphertext


def open_part(
    private_key: X25519PrivateKey,
    sealed: bytes,
    *,
    tenant_id: UUID,
    request_id: UUID,
    service: str,
) -> bytes:
    """Open a sealed part; ValueError when it was not sealed to this key for this binding."""
    if len(sealed) < 32 + 12 + 16:
        raise ValueError("a sealed part is too short")
    shared = private_key.exchange(X25519PublicKey.from_public_bytes(sealed[:32]))
    try:
        return AESGCM(_part_key(shared)).decrypt(
            sealed[32:44], sealed[44:], associated_data(tenant_id, request_id, service)
        )
    except InvalidTag:
        raise ValueError("the part does not open with this request's key") from None
