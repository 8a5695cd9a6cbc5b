"""`consentry erasure start|bulk|status`: file erasure requests as the tenant and follow them.

Following polls the request (the API has no push for this) until it is completed or
rejected: one subject's request shows its state as it changes, a bulk erasure a progress bar
of the subjects every expected service and recipient has answered for. A bulk file larger
than one request allows (100,000 subjects) is filed as several requests, followed together.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from consentry.cli.config import state
from consentry.cli.output import CliError, ExitCode, JsonOption, Output, handle_errors
from consentry.consent.rights.models import MAX_SUBJECTS
from consentry.sdk import Consentry
from consentry.sdk.models import RightsRequest

erasure_app = typer.Typer(help="Erasure requests (GDPR Art. 17).", no_args_is_help=True)

Follow = Annotated[
    bool, typer.Option("--follow", help="wait until the request is completed or rejected")
]
Timeout = Annotated[
    float, typer.Option("--timeout", help="seconds to follow before giving up", min=1)
]
Interval = Annotated[float, typer.Option("--interval", help="seconds between polls", min=0.05)]
Note = Annotated[str | None, typer.Option("--note", help="for the people handling it")]


def _summary(request: RightsRequest) -> dict[str, Any]:
    return {
        "id": request.id,
        "state": request.state,
        "subjects": request.subject_count,
        "done": request.progress.get("done"),
        "due_at": request.deadline.get("due_at"),
        "closed_at": request.closed_at,
    }


def _show(output: Output, requests: list[RightsRequest]) -> None:
    documents = [request.model_dump(mode="json") for request in requests]
    rows = [_summary(request) for request in requests]
    columns = ["id", "state", "subjects", "done", "due_at", "closed_at"]
    output.result(
        documents[0] if len(documents) == 1 else documents,
        lambda: output.table(rows, columns, title="erasure requests"),
    )


def _closed_or_exit(output: Output, requests: list[RightsRequest]) -> None:
    _show(output, requests)
    rejected = [request for request in requests if request.state == "rejected"]
    if rejected:
        reasons = "; ".join(
            f"{r.id}: {(r.model_extra or {}).get('reason') or 'no reason given'}" for r in rejected
        )
        raise CliError(f"rejected: {reasons}")


def follow(
    client: Consentry,
    output: Output,
    filed: list[RightsRequest],
    *,
    timeout: float,
    interval: float,
) -> list[RightsRequest]:
    """Poll every request until all are closed, showing progress; their last states.
    Raises `CliError` (exit 4) when some are still open after `timeout` seconds."""
    total = sum(request.subject_count for request in filed) or 1
    current = {request.id: request for request in filed}
    deadline = time.monotonic() + timeout
    with output.progress() as progress:
        task = progress.add_task("erasure", total=total)
        while True:
            states = sorted({request.state for request in current.values()})
            done = sum(int(request.progress.get("done", 0)) for request in current.values())
            progress.update(task, completed=done, description=f"erasure: {', '.join(states)}")
            open_ids = [rid for rid, request in current.items() if not request.closed]
            if not open_ids:
                progress.update(task, completed=total)
                return list(current.values())
            if time.monotonic() + interval > deadline:
                raise CliError(
                    f"still open after {timeout:g}s: {', '.join(open_ids)} "
                    f"({', '.join(states)}); follow again with `consentry erasure status ID`",
                    ExitCode.STILL_OPEN,
                )
            time.sleep(interval)  # polling: the API has no push for request progress
            for request_id in open_ids:
                current[request_id] = client.rights_request(request_id)


def _finish(
    client: Consentry,
    output: Output,
    filed: list[RightsRequest],
    *,
    follow_it: bool,
    timeout: float,
    interval: float,
) -> None:
    """Show the requests just filed, or follow them until closed (exit 1 if rejected)."""
    if not follow_it:
        _show(output, filed)
        return
    _closed_or_exit(output, follow(client, output, filed, timeout=timeout, interval=interval))


@erasure_app.command("start")
@handle_errors
def start(
    ctx: typer.Context,
    subject_id: Annotated[str, typer.Argument(help="your identifier of the subject")],
    note: Note = None,
    follow_it: Follow = False,
    timeout: Timeout = 300.0,
    interval: Interval = 0.5,
    as_json: JsonOption = False,
) -> None:
    """Erase one subject's data everywhere, as the tenant (in progress at once)."""
    cli = state(ctx, as_json=as_json)
    with cli.client() as client:
        filed = client.file_rights_request("erasure", subject_ids=[subject_id], note=note)
        cli.output.note(f"erasure request {filed.id}: {filed.state}")
        _finish(
            client, cli.output, [filed], follow_it=follow_it, timeout=timeout, interval=interval
        )


def read_subjects(path: Path) -> Iterator[str]:
    """Subject identifiers, one per line (blank lines and `#` comments skipped)."""
    try:
        with path.open(encoding="utf-8") as lines:
            for line in lines:
                subject = line.strip()
                if subject and not subject.startswith("#"):
                    yield subject
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {exc}", ExitCode.USAGE) from None


@erasure_app.command("bulk")
@handle_errors
def bulk(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="subject identifiers, one per line")],
    note: Note = None,
    follow_it: Follow = False,
    timeout: Timeout = 3600.0,
    interval: Interval = 2.0,
    as_json: JsonOption = False,
) -> None:
    """Erase many subjects as the tenant: one request per 100,000 subjects."""
    subjects = list(dict.fromkeys(read_subjects(file)))  # a repeat counts once anyway
    if not subjects:
        raise CliError(f"{file}: no subject identifiers", ExitCode.USAGE)
    cli = state(ctx, as_json=as_json)
    with cli.client() as client:
        filed = [
            client.file_rights_request(
                "erasure", subject_ids=subjects[i : i + MAX_SUBJECTS], note=note
            )
            for i in range(0, len(subjects), MAX_SUBJECTS)
        ]
        for request in filed:
            cli.output.note(f"erasure request {request.id}: {request.subject_count} subjects")
        _finish(client, cli.output, filed, follow_it=follow_it, timeout=timeout, interval=interval)


@erasure_app.command("status")
@handle_errors
def status(
    ctx: typer.Context,
    request_ids: Annotated[list[str], typer.Argument(help="one or more request ids")],
    follow_it: Follow = False,
    timeout: Timeout = 300.0,
    interval: Interval = 0.5,
    as_json: JsonOption = False,
) -> None:
    """Show (or follow) rights requests filed earlier."""
    cli = state(ctx, as_json=as_json)
    with cli.client() as client:
        requests = [client.rights_request(request_id) for request_id in request_ids]
        if follow_it:
            requests = follow(client, cli.output, requests, timeout=timeout, interval=interval)
    _show(cli.output, requests)
