"""`consentry policy publish`: publish (announce) a policy version through the consent API.

The SDK has no operation for it (product code does not publish policies), so the call is
described here the SDK's way (`consentry.sdk._calls.Call`, sent by the SDK client), which
keeps its retries, headers and problem+json errors. The body is checked first with the
API's own model (`PolicyVersionIn`), so a malformed version fails before any request.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from consentry.cli.config import state
from consentry.cli.output import (
    CliError,
    ExitCode,
    JsonOption,
    handle_errors,
    validation_reasons,
)
from consentry.consent.policies.models import PolicyVersionIn
from consentry.sdk import Consentry
from consentry.sdk._calls import Call
from consentry.sdk.client import _Operation

policy_app = typer.Typer(help="Policy versions (the notices consent is given under).")


def publish_policy_call(body: dict[str, Any]) -> Call[dict[str, Any]]:
    """POST /v1/policy-versions (scope policy:admin); the published version as sent back.
    Not resent after a lost answer: the second would be refused as existing."""

    def parse(response: Any) -> dict[str, Any]:
        answer: dict[str, Any] = response.json()
        return answer

    return Call("consent", "POST", "/v1/policy-versions", parse, idempotent=False, json=body)


class AdminConsentry(Consentry):
    """The SDK's sync client plus the administrative calls the CLI makes."""

    publish_policy = _Operation(publish_policy_call)


def version_body(
    version: str, url: str | None, effective_on: date | None, notices: list[str], file: Path | None
) -> dict[str, Any]:
    """The request body from a JSON file (the API's own shape) or the options, validated."""
    body: dict[str, Any]
    if file is not None:
        try:
            body = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {file}: {exc}", ExitCode.USAGE) from None
        if not isinstance(body, dict):
            raise CliError(f"{file}: not a JSON object", ExitCode.USAGE)
        body.setdefault("version", version)
    else:
        purposes = []
        for notice in notices:
            purpose, sep, text = notice.partition("=")
            if not sep:
                raise CliError(f"--notice {notice!r}: expected PURPOSE=TEXT", ExitCode.USAGE)
            purposes.append({"purpose": purpose.strip(), "notice": text})
        body = {"version": version, "url": url, "effective_on": effective_on, "purposes": purposes}
    try:
        return PolicyVersionIn.model_validate(body).model_dump(mode="json")
    except ValidationError as exc:
        reasons = validation_reasons(exc)
        raise CliError(f"invalid policy version: {reasons}", ExitCode.USAGE) from None


@policy_app.command("publish")
@handle_errors
def publish(
    ctx: typer.Context,
    version: Annotated[str, typer.Argument(help="the version's name, e.g. 2026-11")],
    url: Annotated[
        str | None, typer.Option("--url", help="where the full policy is published")
    ] = None,
    effective_on: Annotated[
        datetime | None,
        typer.Option(
            "--effective-on", formats=["%Y-%m-%d"], help="takes effect at the start of this day"
        ),
    ] = None,
    notices: Annotated[
        list[str] | None,
        typer.Option("--notice", help="PURPOSE=TEXT: the notice shown for a purpose (repeat)"),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="the whole version as JSON (the API's request body)"),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Publish a policy version. A version that changes purposes takes effect at least 30
    working days after today; the tenant's first one at once."""
    day = effective_on.date() if effective_on else None
    body = version_body(version, url, day, notices or [], file)
    cli = state(ctx, as_json=as_json)
    with cli.client_of(AdminConsentry) as client:
        published = client.publish_policy(body)
    output = cli.output
    shown = {
        name: published.get(name)
        for name in ("version", "state", "effective_on", "previous_version", "changed_purposes")
    }
    output.result(published, lambda: output.fields(shown, title="policy version published"))
