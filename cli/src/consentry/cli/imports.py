"""`consentry import consents FILE`: bulk import of consent decisions from CSV or JSON Lines.

Every row is checked on its own: first with the consent API's own request model
(`ConsentDecisionIn`, plus the subject and purpose), then by the API (unknown purpose or
policy version, the child and GPC rules), one `PUT .../consents/{purpose}` per row. The API
has no multi-subject batch, and its multi-purpose capture is all-or-none, which would turn
one bad row into several rejects; so rows are sent one by one with bounded concurrency. Rows
of one subject go in file order (the later decision wins, as it would have live); different
subjects go side by side. A rejected row is reported (line and reason, never the subject id:
stderr is often logged) and the import goes on.
"""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.progress import Progress, TaskID

from consentry.cli.config import Cli, state
from consentry.cli.output import (
    CliError,
    ExitCode,
    JsonOption,
    handle_errors,
    problem_line,
    validation_reasons,
)
from consentry.consent.consents.models import (
    ConsentDecisionIn,
    ConsentMethod,
    Purpose,
    SubjectId,
)
from consentry.sdk import AsyncConsentry, ConsentryError
from consentry.sdk._calls import Context

import_app = typer.Typer(help="Bulk imports.", no_args_is_help=True)


class Format(StrEnum):
    """The input file's format."""

    CSV = "csv"
    JSONL = "jsonl"


_SUFFIXES = {".csv": Format.CSV, ".jsonl": Format.JSONL, ".ndjson": Format.JSONL}


class ConsentRow(ConsentDecisionIn):
    """One row: a decision as the API takes it, plus whose and for which purpose. Imported
    decisions are recorded with method `import` unless the row says otherwise."""

    subject_id: SubjectId
    purpose: Purpose
    method: ConsentMethod = ConsentMethod.IMPORT


@dataclass(frozen=True, slots=True)
class Reject:
    """A row that was not recorded: where it is and why."""

    line: int
    reason: str
    record: Any = None


Parsed = tuple[int, dict[str, Any] | Reject]


def read_records(path: Path, fmt: Format) -> Iterator[Parsed]:
    """(line, record) for every row of the file, or (line, Reject) for unreadable ones."""
    try:
        with path.open(encoding="utf-8", newline="") as file:
            if fmt is Format.CSV:
                reader = csv.DictReader(file)
                for record in reader:
                    # empty cells are absent values; a cell past the header is a broken row
                    if None in record:
                        yield reader.line_num, Reject(reader.line_num, "more cells than columns")
                        continue
                    yield reader.line_num, {k: v for k, v in record.items() if v not in ("", None)}
            else:
                for line, text in enumerate(file, start=1):
                    if text.strip():
                        yield line, _json_record(line, text)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CliError(f"cannot read {path}: {exc}", ExitCode.USAGE) from None


def _json_record(line: int, text: str) -> dict[str, Any] | Reject:
    try:
        record = json.loads(text)
    except ValueError as exc:
        return Reject(line, f"not JSON: {exc}")
    if not isinstance(record, dict):
        return Reject(line, "not a JSON object", record)
    return record


def validate(line: int, record: dict[str, Any]) -> ConsentRow | Reject:
    """The row as the API's model reads it, or why it cannot be."""
    try:
        return ConsentRow.model_validate(record)
    except ValidationError as exc:
        return Reject(line, validation_reasons(exc), record)


def _context(row: ConsentRow) -> Context:
    context: Context = {"method": row.method.value, "gpc": row.gpc}
    if row.source is not None:
        context["source"] = row.source
    if row.occurred_at is not None:
        context["occurred_at"] = row.occurred_at
    if row.age is not None:
        context["age"] = row.age
    return context


@dataclass
class Importer:
    """Sends the valid rows, one subject's rows in order, `concurrency` subjects at once."""

    client: AsyncConsentry
    progress: Progress
    task: TaskID
    concurrency: int

    async def run(self, by_subject: dict[str, list[tuple[int, ConsentRow]]]) -> list[Reject]:
        """Send every row; the rows the API refused."""
        rejects: list[Reject] = []
        gate = asyncio.Semaphore(self.concurrency)

        async def subject_rows(rows: list[tuple[int, ConsentRow]]) -> None:
            async with gate:
                for line, row in rows:
                    try:
                        await self.client.decide(
                            row.subject_id,
                            row.purpose,
                            row.status.value,
                            policy_version=row.policy_version,
                            **_context(row),
                        )
                    except ConsentryError as exc:  # refused by the API: this row only
                        rejects.append(Reject(line, problem_line(exc), row.model_dump(mode="json")))
                    self.progress.advance(self.task)

        async with asyncio.TaskGroup() as group:
            for rows in by_subject.values():
                group.create_task(subject_rows(rows))
        return rejects


def _format_of(path: Path, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    found = _SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise CliError(f"{path}: say --format csv or jsonl (unknown suffix)", ExitCode.USAGE)
    return found


@import_app.command("consents")
@handle_errors
def consents(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="CSV with a header row, or JSON Lines")],
    fmt: Annotated[
        Format | None,
        typer.Option("--format", help="csv or jsonl (default: from the file's suffix)"),
    ] = None,
    rejects_file: Annotated[
        Path | None,
        typer.Option(
            "--rejects", help="write the rejected rows here (JSON Lines: line, reason, row)"
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=64, help="subjects imported at once")
    ] = 8,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="validate every row, send nothing")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Import consent decisions: columns subject_id, purpose, status, policy_version and
    optionally method (default import), source, occurred_at, gpc, age. Exit 3 when some
    rows were rejected (the others are recorded)."""
    cli = state(ctx, as_json=as_json)
    records = list(read_records(file, _format_of(file, fmt)))
    rejects: list[Reject] = []
    by_subject: dict[str, list[tuple[int, ConsentRow]]] = {}
    for line, record in records:
        checked = record if isinstance(record, Reject) else validate(line, record)
        if isinstance(checked, Reject):
            rejects.append(checked)
        else:
            by_subject.setdefault(checked.subject_id, []).append((line, checked))
    valid = sum(map(len, by_subject.values()))
    if not dry_run and valid:
        rejects += asyncio.run(_send(cli, by_subject, valid, concurrency))
    rejects.sort(key=lambda reject: reject.line)
    _report(cli, file, len(records), rejects, rejects_file, dry_run)


async def _send(
    cli: Cli, by_subject: dict[str, list[tuple[int, ConsentRow]]], valid: int, concurrency: int
) -> list[Reject]:
    async with cli.async_client() as client:
        with cli.output.progress() as progress:
            task = progress.add_task("importing consents", total=valid)
            return await Importer(client, progress, task, concurrency).run(by_subject)


def _report(
    cli: Cli, file: Path, rows: int, rejects: list[Reject], rejects_file: Path | None, dry_run: bool
) -> None:
    output = cli.output
    for reject in rejects:
        output.note(f"{file.name} line {reject.line}: {reject.reason}")
    if rejects_file is not None:
        with rejects_file.open("w", encoding="utf-8") as out:
            for reject in rejects:
                document = {"line": reject.line, "reason": reject.reason, "row": reject.record}
                out.write(json.dumps(document, default=str, ensure_ascii=False) + "\n")
    summary = {
        "rows": rows,
        "accepted": rows - len(rejects),
        "rejected": len(rejects),
        "dry_run": dry_run,
        "rejects": [{"line": r.line, "reason": r.reason} for r in rejects],
    }
    verb = "valid" if dry_run else "accepted"
    output.result(
        summary,
        lambda: output.line(f"{rows} rows: {rows - len(rejects)} {verb}, {len(rejects)} rejected"),
    )
    if rejects:
        raise typer.Exit(int(ExitCode.REJECTED_ROWS))
