"""How the CLI answers: rich tables for people, JSON for machines, one line per error.

Results go to stdout (a table, or with `--json` one JSON document or JSON lines); progress,
notes and errors go to stderr, so `--json` output can be piped whatever else is shown.
Expected failures (a problem answer, an unreachable service, a bad setting) are printed as
one line and a distinct exit code, never as a traceback.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar

import asyncpg
import httpx
import typer
from aiokafka.errors import KafkaError
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from consentry.sdk import ConsentryError

P = ParamSpec("P")
T = TypeVar("T")

JsonOption = Annotated[
    bool, typer.Option("--json", help="machine-readable output: JSON (lines) on stdout")
]


class ExitCode(IntEnum):
    """The CLI's exit codes (documented in docs/cli.md)."""

    OK = 0
    ERROR = 1  # the API refused, a service is unreachable, a verification failed
    USAGE = 2  # bad options or configuration (as click's own usage errors)
    REJECTED_ROWS = 3  # a bulk import finished, some rows were rejected
    STILL_OPEN = 4  # a followed request did not close in time


class CliError(Exception):
    """An expected failure: printed as `error: <message>`, exit with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


def problem_line(error: ConsentryError) -> str:
    """A problem answer in one line: type, title, detail (and the status when no type)."""
    line = f"{error.type} ({error.status}) {error.title}"
    return f"{line}: {error.detail}" if error.detail else line


def validation_reasons(exc: ValidationError) -> str:
    """A pydantic refusal in one line: `field: why; field: why`."""
    return "; ".join(
        f"{'.'.join(map(str, error['loc'])) or 'value'}: {error['msg']}" for error in exc.errors()
    )


@dataclass
class Output:
    """Where and how results, notes and progress are printed."""

    json: bool = False
    out: Console = field(default_factory=lambda: Console(soft_wrap=True))
    err: Console = field(default_factory=lambda: Console(stderr=True, soft_wrap=True))

    def result(self, document: Any, render: Callable[[], None]) -> None:
        """Print `document` as JSON with `--json`, else call `render` (tables for people)."""
        if self.json:
            self.json_line(document)
        else:
            render()

    def json_line(self, document: Any) -> None:
        """One JSON document on one line (dates as ISO strings)."""
        self.out.out(json.dumps(document, default=str, ensure_ascii=False), highlight=False)

    def table(
        self, rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None
    ) -> None:
        """A table of `rows` with `columns` (missing cells empty)."""
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(_cell(row.get(column)) for column in columns))
        self.out.print(table)

    def fields(self, values: Mapping[str, Any], title: str | None = None) -> None:
        """A two-column table: name, value."""
        self.table([{"field": k, "value": v} for k, v in values.items()], ["field", "value"], title)

    def line(self, text: str) -> None:
        """A line of result for people on stdout (no markup)."""
        self.out.print(text, highlight=False, markup=False)

    def note(self, text: str) -> None:
        """A message for people on stderr (never part of the result)."""
        self.err.print(text, highlight=False, markup=False)

    def progress(self, *, counted: bool = True, in_bytes: bool = False) -> Progress:
        """A progress display on stderr: a bar with counts (`in_bytes`: sizes) and ETA, or
        (`counted=False`) a spinner with the elapsed time for work whose size is unknown."""
        columns: list[Any] = [SpinnerColumn(), TextColumn("{task.description}")]
        if counted:
            done = DownloadColumn() if in_bytes else MofNCompleteColumn()
            columns += [BarColumn(), done, TimeRemainingColumn()]
        columns.append(TimeElapsedColumn())
        return Progress(*columns, console=self.err, transient=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def handle_errors(command: Callable[P, T]) -> Callable[P, T]:
    """Turn the expected failures of `command` into one line on stderr and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return command(*args, **kwargs)
        except CliError as exc:
            _fail(str(exc), exc.code)
        except ConsentryError as exc:
            _fail(problem_line(exc), ExitCode.ERROR)
        except httpx.TransportError as exc:
            where = exc.request.url if _has_request(exc) else "the API"
            _fail(f"cannot reach {where}: {exc!s} ({type(exc).__name__})", ExitCode.ERROR)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _fail(f"database: {exc!s} ({type(exc).__name__})", ExitCode.ERROR)
        except OSError as exc:  # a refused connection to the database or broker, a file
            _fail(f"{exc!s} ({type(exc).__name__})", ExitCode.ERROR)
        except KafkaError as exc:
            _fail(f"broker: {exc!s} ({type(exc).__name__})", ExitCode.ERROR)

    return wrapper


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - raises RuntimeError when the error has no request
    except RuntimeError:
        return False
    return True


def _fail(message: str, code: ExitCode) -> NoReturn:
    Console(stderr=True, soft_wrap=True).print(f"error: {message}", markup=False, highlight=False)
    raise typer.Exit(int(code))
