"""Contact data (an e-mail address) under a per-subject data key: crypto-shredding.

Envelope encryption: each subject that has a contact gets a random 32-byte data key, sealed
under the tenant's key-encryption key (`TenantKeys.kek_sealer`) with the context
`subject:<ref>:data-key`; the contact is sealed under the data key with the context
`subject:<ref>:contact:email`. Deleting the sealed data key (erasure) leaves every copy of the
contact ciphertext unreadable.

For the sending system, list members carry the contact sealed under the tenant's delivery key
(`TenantKeys.delivery_key`, AES-256-GCM, associated data `<tenant_id>/<subject_ref>`), never
in clear.
"""

from __future__ import annotations

import base64
import secrets

from consentry.eventing.sealing import Sealer
from consentry.preferences.tenants import TenantKeys

DATA_KEY_BYTES = 32


def data_key_context(subject_ref: str) -> str:
    """The sealing context of a subject's data key."""
    return f"subject:{subject_ref}:data-key"


def contact_context(subject_ref: str) -> str:
    """The sealing context of a subject's e-mail address."""
    return f"subject:{subject_ref}:contact:email"


def new_data_key(keys: TenantKeys, subject_ref: str) -> tuple[bytes, bytes]:
    """A fresh data key and its sealed form (to store)."""
    data_key = secrets.token_bytes(DATA_KEY_BYTES)
    return data_key, keys.kek_sealer.seal(data_key, context=data_key_context(subject_ref))


def open_data_key(keys: TenantKeys, subject_ref: str, sealed: bytes) -> bytes:
    """The subject's data key from its sealed form."""
    return keys.kek_sealer.open(sealed, context=data_key_context(subject_ref))


def seal_contact(data_key: bytes, subject_ref: str, email: str) -> bytes:
    """The e-mail address sealed under the subject's data key."""
    return Sealer(data_key).seal(email.encode(), context=contact_context(subject_ref))


def open_contact(data_key: bytes, subject_ref: str, sealed: bytes) -> str:
    """The e-mail address from its sealed form."""
    return Sealer(data_key).open(sealed, context=contact_context(subject_ref)).decode()


def for_delivery(keys: TenantKeys, subject_ref: str, email: str) -> str:
    """The contact sealed for the tenant's sending system (base64url, no padding)."""
    sealed = Sealer(keys.delivery_key).seal(
        email.encode(), context=f"{keys.tenant_id}/{subject_ref}"
    )
    return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()
