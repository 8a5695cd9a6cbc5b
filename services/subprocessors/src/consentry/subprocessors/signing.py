"""Standard Webhooks signatures (https://www.standardwebhooks.com/) with the
`standardwebhooks` library: signing notices, verifying acknowledgements.

A recipient's secret is 32 random bytes, shown to the tenant once as `whsec_<base64>`. The
signed content is `<webhook-id>.<webhook-timestamp>.<body>`, HMAC-SHA256, base64, sent as
`v1,<signature>`; during a secret rotation a notice carries one signature per secret,
space-separated, and either secret verifies (the library accepts any matching one).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from uuid import UUID

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
MESSAGE_ID_PREFIX = "msg_"


class SignatureError(Exception):
    """A signed message is refused: `reason` is `invalid-signature` or `stale-timestamp`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def new_secret() -> bytes:
    """A fresh signing secret."""
    return secrets.token_bytes(SECRET_BYTES)


def format_secret(secret: bytes) -> str:
    """The secret as shown to the tenant: `whsec_<base64>`."""
    return SECRET_PREFIX + base64.b64encode(secret).decode()


def parse_secret(text: str) -> bytes:
    """The bytes of a `whsec_<base64>` secret; ValueError when it is not one."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError("a signing secret starts with whsec_")
    try:
        return base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a signing secret is whsec_ and base64") from None


def webhook_id(delivery_id: UUID) -> str:
    """The Standard Webhooks message id of a delivery: the same on every attempt."""
    return MESSAGE_ID_PREFIX + delivery_id.hex


def delivery_id_of(message_id: str) -> UUID | None:
    """The delivery a `msg_<hex>` message id names, or None."""
    if not message_id.startswith(MESSAGE_ID_PREFIX):
        return None
    try:
        return UUID(hex=message_id.removeprefix(MESSAGE_ID_PREFIX))
    except ValueError:
        return None


def sign(
    secrets_: Sequence[bytes], message_id: str, body: str, at: datetime | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, one signature per secret."""
    when = (at or datetime.now(UTC)).astimezone(UTC)
    signature = " ".join(Webhook(secret).sign(message_id, when, body) for secret in secrets_)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def verify(
    secrets_: Sequence[bytes],
    body: bytes,
    headers: Mapping[str, str],
    *,
    tolerance_seconds: float,
    now: datetime | None = None,
) -> str:
    """Check a signed message against any of `secrets_`; return its `webhook-id`.

    Raises SignatureError `stale-timestamp` when `webhook-timestamp` is more than
    `tolerance_seconds` from now (either way), `invalid-signature` for anything else.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    message_id = lowered.get("webhook-id", "")
    timestamp = lowered.get("webhook-timestamp", "")
    if not (message_id and timestamp and lowered.get("webhook-signature")):
        raise SignatureError("invalid-signature", "webhook-id, -timestamp and -signature needed")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureError("invalid-signature", "webhook-timestamp is not a number") from None
    moment = (now or datetime.now(UTC)).timestamp()
    if abs(moment - sent) > tolerance_seconds:
        raise SignatureError(
            "stale-timestamp", f"webhook-timestamp is more than {tolerance_seconds:g} s from now"
        )
    for secret in secrets_:
        try:
            Webhook(secret).verify(body, dict(lowered), json_parse=False)
        except (WebhookVerificationError, ValueError):  # ValueError: malformed header parts
            continue
        return message_id
    raise SignatureError("invalid-signature", "no signature matches the recipient's secret")
