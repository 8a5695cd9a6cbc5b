"""`consentry subject check`: may a subject's data be used for these purposes now?"""

from __future__ import annotations

from typing import Annotated

import typer

from consentry.cli.config import state
from consentry.cli.output import JsonOption, handle_errors

subject_app = typer.Typer(help="Data subjects: consent checks.", no_args_is_help=True)


@subject_app.command("check")
@handle_errors
def check(
    ctx: typer.Context,
    subject_id: Annotated[str, typer.Argument(help="your identifier of the subject")],
    purposes: Annotated[list[str], typer.Argument(help="one or more purposes")],
    as_json: JsonOption = False,
) -> None:
    """Check one subject against one or more purposes (one batch call for several)."""
    cli = state(ctx, as_json=as_json)
    with cli.client() as client:
        if len(purposes) == 1:
            results = [client.check(subject_id, purposes[0])]
        else:
            results = client.check_many((subject_id, purpose) for purpose in purposes)
    rows = [
        {"purpose": purpose, "allowed": result.allowed, "reason": result.reason}
        for purpose, result in zip(purposes, results, strict=True)
    ]
    output = cli.output
    output.result(rows, lambda: output.table(rows, ["purpose", "allowed", "reason"]))
