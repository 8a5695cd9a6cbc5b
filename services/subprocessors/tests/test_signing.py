"""Standard Webhooks signing and verification, the retry schedule, the notice body, and the
examples of docs/webhooks.md (run as written, so the documentation cannot drift)."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from consentry.subprocessors import signing
from consentry.subprocessors.deliveries.models import notice_body
from consentry.subprocessors.notifier.sender import answer_acknowledges, backoff_seconds

DOC = Path(__file__).resolve().parents[3] / "docs" / "webhooks.md"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def _signed_notice(
    secrets_: list[bytes], at: datetime | None = None
) -> tuple[bytes, dict[str, str]]:
    delivery = uuid.uuid4()
    body = notice_body(
        kind="erasure",
        delivery_id=delivery,
        recipient_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        subject_ref="ab" * 32,
        request_id="req-1",
        request_kind="erasure",
        purposes=[],
        occurred_at=datetime(2026, 11, 29, 8, 0, tzinfo=UTC),
        ack_url="https://subprocessors.test/v1/acknowledgements",
    )
    return body.encode(), signing.sign(secrets_, signing.webhook_id(delivery), body, at)


def test_a_notice_verifies_with_the_standardwebhooks_library() -> None:
    secret = signing.new_secret()
    body, headers = _signed_notice([secret])
    notice = Webhook(signing.format_secret(secret)).verify(body, headers)
    assert notice["type"] == "erasure.requested"
    assert headers["webhook-id"] == notice["webhook_id"]
    assert signing.verify([secret], body, headers, tolerance_seconds=300) == notice["webhook_id"]
    assert signing.parse_secret(signing.format_secret(secret)) == secret


def test_two_secrets_during_a_rotation() -> None:
    new, old, stranger = signing.new_secret(), signing.new_secret(), signing.new_secret()
    body, headers = _signed_notice([new, old])
    for secret in (new, old):
        Webhook(signing.format_secret(secret)).verify(body, headers)
        signing.verify([secret], body, headers, tolerance_seconds=300)
    with pytest.raises(signing.SignatureError) as caught:
        signing.verify([stranger], body, headers, tolerance_seconds=300)
    assert caught.value.reason == "invalid-signature"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"webhook-timestamp": "not-a-number"}, "invalid-signature"),
        ({"webhook-signature": "v1,AAAA"}, "invalid-signature"),
        ({"webhook-signature": "garbage"}, "invalid-signature"),
        ({"webhook-signature": "v2,abc v1"}, "invalid-signature"),
        ({"webhook-id": "msg_other"}, "invalid-signature"),
        ({"webhook-signature": ""}, "invalid-signature"),
    ],
)
def test_refusals(change: dict[str, str], reason: str) -> None:
    secret = signing.new_secret()
    body, headers = _signed_notice([secret])
    with pytest.raises(signing.SignatureError) as caught:
        signing.verify([secret], body, {**headers, **change}, tolerance_seconds=300)
    assert caught.value.reason == reason


def test_stale_and_future_timestamps() -> None:
    secret = signing.new_secret()
    for skew in (timedelta(minutes=-6), timedelta(minutes=6)):
        body, headers = _signed_notice([secret], datetime.now(UTC) + skew)
        with pytest.raises(signing.SignatureError) as caught:
            signing.verify([secret], body, headers, tolerance_seconds=300)
        assert caught.value.reason == "stale-timestamp"
    body, headers = _signed_notice([secret], datetime.now(UTC) - timedelta(minutes=4))
    signing.verify([secret], body, headers, tolerance_seconds=300)


def test_a_signed_answer_acknowledges_only_under_the_notice_id() -> None:
    secret = signing.new_secret()
    answer = json.dumps({"acknowledged": True})
    headers = signing.sign([secret], "msg_" + "a" * 32, answer)
    assert answer_acknowledges(
        [secret], "msg_" + "a" * 32, headers, answer.encode(), tolerance_seconds=300
    )
    assert not answer_acknowledges(
        [secret], "msg_" + "b" * 32, headers, answer.encode(), tolerance_seconds=300
    )
    assert not answer_acknowledges(
        [signing.new_secret()], "msg_" + "a" * 32, headers, answer.encode(), tolerance_seconds=300
    )
    no = json.dumps({"acknowledged": False})
    assert not answer_acknowledges(
        [secret],
        "msg_" + "a" * 32,
        signing.sign([secret], "msg_" + "a" * 32, no),
        no.encode(),
        tolerance_seconds=300,
    )


def test_backoff_is_full_jitter_doubling_to_the_cap() -> None:
    rng = random.Random(7)
    for attempts in range(1, 40):
        ceiling = min(60.0, 0.5 * 2 ** (attempts - 1))
        delays = [backoff_seconds(attempts, base=0.5, cap=60.0, rng=rng) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not a fixed delay
        assert min(delays) < ceiling * 0.2


def test_webhook_ids_name_their_delivery() -> None:
    delivery = uuid.uuid4()
    assert signing.delivery_id_of(signing.webhook_id(delivery)) == delivery
    assert signing.delivery_id_of("msg_nothex") is None
    assert signing.delivery_id_of(str(delivery)) is None


# --- docs/webhooks.md, run as written ----------------------------------------------------


def test_the_documented_plain_hmac_verifier() -> None:
    code = next(block for block in _blocks("python") if "def verify(" in block)
    namespace: dict[str, Any] = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    secret = signing.new_secret()
    body, headers = _signed_notice([secret, signing.new_secret()])
    assert namespace["verify"](signing.format_secret(secret), body, headers) is True
    assert namespace["verify"](signing.format_secret(secret), body + b" ", headers) is False
    stale_body, stale = _signed_notice([secret], datetime.now(UTC) - timedelta(minutes=10))
    assert namespace["verify"](signing.format_secret(secret), stale_body, stale) is False
    assert namespace["verify"](signing.format_secret(signing.new_secret()), body, headers) is False


def test_the_documented_library_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    handler, acknowledger = (
        next(block for block in _blocks("python") if marker in block)
        for marker in ("def handle_notice(", "def acknowledge(")
    )
    secret = signing.new_secret()
    done: set[str] = set()
    queued: list[dict[str, Any]] = []
    namespace: dict[str, Any] = {"already_done": lambda i: i in done, "enqueue": queued.append}
    exec(compile(handler, str(DOC), "exec"), namespace)
    namespace["SECRET"] = signing.format_secret(secret)
    body, headers = _signed_notice([secret])
    assert namespace["handle_notice"](body, headers) == 204
    assert queued[0]["webhook_id"] == headers["webhook-id"]
    assert namespace["handle_notice"](body.replace(b"req-1", b"req-2"), headers) == 401

    sent: list[tuple[str, bytes, dict[str, str]]] = []

    def post(url: str, *, content: str, headers: dict[str, str]) -> httpx.Response:
        sent.append((url, content.encode(), headers))
        return httpx.Response(200, request=httpx.Request("POST", url))

    monkeypatch.setattr(httpx, "post", post)
    exec(compile(acknowledger, str(DOC), "exec"), namespace)
    namespace["SECRET"] = signing.format_secret(secret)
    namespace["acknowledge"](queued[0])
    url, raw, ack_headers = sent[0]
    assert url == "https://subprocessors.test/v1/acknowledgements"
    assert (
        signing.verify([secret], raw, ack_headers, tolerance_seconds=300) != headers["webhook-id"]
    )
    assert json.loads(raw) == {
        "webhook_id": queued[0]["webhook_id"],
        "recipient_id": queued[0]["recipient_id"],
    }


def test_the_documented_openssl_line(tmp_path: Path) -> None:
    # The documented line needs these; a machine without them fails here rather than skip
    # (a skipped test would leave the documented example unchecked).
    missing = [tool for tool in ("openssl", "xxd", "base64") if shutil.which(tool) is None]
    assert missing == [], f"the documented verification line needs {missing} on PATH"
    script = next(block for block in _blocks("sh") if "openssl dgst" in block)
    secret = signing.new_secret()
    body, headers = _signed_notice([secret])
    (tmp_path / "body.json").write_bytes(body)
    result = subprocess.run(
        ["/bin/bash", "-c", script],
        cwd=tmp_path,
        env={
            "PATH": "/usr/bin:/bin",
            "SECRET": signing.format_secret(secret),
            "WEBHOOK_ID": headers["webhook-id"],
            "WEBHOOK_TIMESTAMP": headers["webhook-timestamp"],
        },
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"v1,{result.stdout.strip()}" == headers["webhook-signature"]
