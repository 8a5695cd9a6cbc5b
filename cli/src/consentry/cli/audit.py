"""`consentry audit export|keys|verify`: fetch a tenant's audit log and check it offline.

`verify` is the standalone verifier (`consentry.audit.consentry_verify`, the `consentry-verify`
script an auditor runs alone), called as a library so the result is the same bytes-for-bytes
check; its progress callback (bytes of entries checked, as each segment of the file is
scanned) drives the bar.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

from consentry.audit import consentry_verify
from consentry.cli.config import CliSettings, state
from consentry.cli.output import CliError, ExitCode, JsonOption, Output, handle_errors
from consentry.sdk.client import USER_AGENT
from consentry.sdk.errors import raise_for_problem

audit_app = typer.Typer(help="The audit log: export, keys, offline verification.")

ExistingFile = Annotated[
    Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="the export file")
]
OutputFile = Annotated[Path, typer.Option("--output", "-o", help="where to write it")]


def _audit_client(settings: CliSettings, *, needs_key: bool = True) -> httpx.Client:
    headers = {"User-Agent": USER_AGENT}
    if settings.api_key is not None:
        headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
    elif needs_key:
        raise CliError("no API key: set CONSENTRY_API_KEY or pass --api-key", ExitCode.USAGE)
    # an export streams for as long as the log is long: no read timeout
    timeout = httpx.Timeout(10.0, read=None)
    return httpx.Client(base_url=settings.audit_url, headers=headers, timeout=timeout)


@audit_app.command("export")
@handle_errors
def export(ctx: typer.Context, output_file: OutputFile) -> None:
    """Download the tenant's whole audit log with its signed checkpoints (export.v1)."""
    cli = state(ctx)
    output = cli.output
    lines = 0
    with (
        _audit_client(cli.settings()) as client,
        client.stream("GET", "/v1/audit/export") as response,
    ):
        if response.is_error:
            response.read()
            raise_for_problem(response)
        with output.progress(counted=False) as progress, output_file.open("wb") as out:
            task = progress.add_task("exporting: 0 entries")
            for line in response.iter_lines():
                out.write(line.encode() + b"\n")
                lines += 1
                if lines % 1000 == 0:
                    progress.update(task, description=f"exporting: {lines - 1} entries")
            progress.update(task, description=f"exported: {max(lines - 1, 0)} entries")
    output.line(f"{output_file}: {max(lines - 1, 0)} entries")


@audit_app.command("keys")
@handle_errors
def keys(ctx: typer.Context, output_file: OutputFile) -> None:
    """Save the audit service's public checkpoint keys (JWKS), to pin them in `verify`."""
    cli = state(ctx)
    with _audit_client(cli.settings(), needs_key=False) as client:
        response = client.get("/v1/audit/keys")
        raise_for_problem(response)
    output_file.write_bytes(response.content)
    cli.output.line(f"{output_file}: {len(response.json().get('keys', []))} key(s)")


def _load_jwks(path: Path | None) -> Any:
    if path is None:
        return None
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise CliError(f"cannot read {path}: {exc}", ExitCode.USAGE) from None


def run_verification(output: Output, path: Path, jwks: Any, workers: int | None) -> Any:
    """`verify_export` in a thread while a bar shows how far it got; its report."""
    outcome: dict[str, Any] = {}
    with output.progress(in_bytes=True) as progress:
        task = progress.add_task(f"verifying {path.name}", total=None)

        def advance(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        def work() -> None:
            try:
                outcome["report"] = consentry_verify.verify_export(
                    str(path), jwks=jwks, workers=workers, progress=advance
                )
            except Exception as exc:  # handed to the main thread as it is
                outcome["error"] = exc

        worker = threading.Thread(target=work, name="consentry-verify")
        worker.start()
        worker.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]


@audit_app.command("verify")
@handle_errors
def verify(
    ctx: typer.Context,
    export_file: ExistingFile,
    jwks_file: Annotated[
        Path | None,
        typer.Option(
            "--jwks",
            exists=True,
            dir_okay=False,
            help="trusted keys (`consentry audit keys`); default: the export's own (unpinned)",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="processes (default: auto)")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify an audit export offline (signatures, seq, hashes, chain, checkpoint roots).
    Exit 1 naming the first entry or checkpoint that fails."""
    output = state(ctx, as_json=as_json).output
    jwks = _load_jwks(jwks_file)
    try:
        report = run_verification(output, export_file, jwks, workers)
    except consentry_verify.InputError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
    except consentry_verify.VerificationError as exc:
        if output.json:
            output.json_line({"verified": False, "failure": str(exc)})
        raise CliError(f"verification FAILED: {exc}") from None
    document = {
        "verified": True,
        "tenant_id": report.tenant_id,
        "entries": report.entries,
        "checkpoints": report.checkpoints,
        "head_chain_hash": report.head_chain_hash,
        "keys": report.keys,
        "summary": report.summary(),
    }
    output.result(document, lambda: output.line(f"OK export: {report.summary()}"))
