"""Subject pseudonyms: HMAC under the tenant's key over a normalised identifier."""

from __future__ import annotations

import hashlib
import hmac

from hypothesis import given
from hypothesis import strategies as st

from consentry.consent.tenants.service import (
    normalise_subject_id,
    pseudonymise,
    pseudonymise_many,
)

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def test_reference_is_hmac_sha256_hex_of_the_normalised_identifier() -> None:
    expected = hmac.new(KEY_A, b"alice@example.com", hashlib.sha256).hexdigest()
    assert pseudonymise(KEY_A, "  Alice@Example.COM ") == expected


def test_user_ids_stay_case_sensitive() -> None:
    assert pseudonymise(KEY_A, "User-42") != pseudonymise(KEY_A, "user-42")


def test_unicode_forms_are_normalised() -> None:
    assert normalise_subject_id("e\u0301") == normalise_subject_id("\u00e9")


@given(st.text(min_size=1, max_size=80))
def test_tenants_get_unrelated_references(subject_id: str) -> None:
    a, b = pseudonymise(KEY_A, subject_id), pseudonymise(KEY_B, subject_id)
    assert a != b
    assert a == pseudonymise(KEY_A, subject_id)
    assert len(a) == 64
    assert set(a) <= set("0123456789abcdef")


def test_many_at_once_equals_one_by_one() -> None:
    key = bytes(range(32))
    ids = ["user-1", " Alice@Example.COM ", "cafe\u0301", "user-1"]
    assert pseudonymise_many(key, ids) == [pseudonymise(key, value) for value in ids]
    assert pseudonymise_many(key, []) == []
