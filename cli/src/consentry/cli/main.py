"""`consentry`: the platform's command line (docs/cli.md).

HTTP commands go through the Python SDK with the tenant's API key; operator commands (tenant
and key creation, replay) work on a service's database, and `tail` on the broker, with the
same settings (`CONSENTRY_*`) the services use.
"""

from __future__ import annotations

from typing import Annotated

import typer

from consentry.cli.audit import audit_app
from consentry.cli.config import Cli
from consentry.cli.erasure import erasure_app
from consentry.cli.imports import import_app
from consentry.cli.policies import policy_app
from consentry.cli.replay import replay
from consentry.cli.subjects import subject_app
from consentry.cli.tail import tail
from consentry.cli.tenants import key_app, tenant_app

app = typer.Typer(
    name="consentry",
    help="consentry: tenants, policies, consent checks, erasure, imports, replay, audit, topics.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # expected failures are one line (output.handle_errors)
)


@app.callback()
def main(
    ctx: typer.Context,
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api-url", help="the consent API (default: CONSENTRY_API_URL)", show_default=False
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="the tenant's API key (default: CONSENTRY_API_KEY)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Options for every HTTP command; the environment (CONSENTRY_*) supplies the rest."""
    ctx.obj = Cli(api_url=api_url, api_key=api_key)


app.add_typer(tenant_app, name="tenant")
app.add_typer(key_app, name="key")
app.add_typer(policy_app, name="policy")
app.add_typer(subject_app, name="subject")
app.add_typer(erasure_app, name="erasure")
app.add_typer(import_app, name="import")
app.add_typer(audit_app, name="audit")
app.command("replay")(replay)
app.command("tail")(tail)


if __name__ == "__main__":
    app()
