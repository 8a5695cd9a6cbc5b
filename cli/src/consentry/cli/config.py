"""Where the CLI finds the platform: pydantic-settings from `CONSENTRY_*`, options on top.

The variable names are the ones the dev stack and the services use (`CONSENTRY_DATABASE_URL`,
`CONSENTRY_KAFKA_BOOTSTRAP_SERVERS`, `consentry.devstack.services`), so a shell that runs a
service runs the CLI against it; the HTTP side adds `CONSENTRY_API_URL` (the consent API),
`CONSENTRY_PREFERENCES_URL`, `CONSENTRY_AUDIT_URL` and `CONSENTRY_API_KEY`. The defaults are
the ports of `make run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import typer
from pydantic import Field, SecretStr

from consentry.cli.output import CliError, ExitCode, Output
from consentry.eventing.settings import ConsentrySettings, SettingsError, load_settings
from consentry.sdk import AsyncConsentry, Consentry
from consentry.sdk.client import DEFAULT_CONSENT_URL, DEFAULT_PREFERENCES_URL

DEFAULT_AUDIT_URL = "http://127.0.0.1:8002"
S = TypeVar("S", bound=ConsentrySettings)
C = TypeVar("C", bound=Consentry)


class CliSettings(ConsentrySettings):
    """What the HTTP commands need; the database and broker commands load their own."""

    api_url: str = Field(default=DEFAULT_CONSENT_URL, description="the consent API")
    preferences_url: str = Field(default=DEFAULT_PREFERENCES_URL, description="preferences API")
    audit_url: str = Field(default=DEFAULT_AUDIT_URL, description="the audit API")
    api_key: SecretStr | None = Field(default=None, description="the tenant's API key")


@dataclass
class Cli:
    """The invocation's state (Typer's `ctx.obj`): global options and how to print."""

    api_url: str | None = None
    api_key: str | None = None
    output: Output = field(default_factory=Output)

    def settings(self) -> CliSettings:
        """The HTTP settings, the global options overriding the environment."""
        overrides = {
            name: value
            for name, value in (("api_url", self.api_url), ("api_key", self.api_key))
            if value is not None
        }
        return load(CliSettings, **overrides)

    def _key(self, settings: CliSettings) -> str:
        if settings.api_key is None:
            raise CliError("no API key: set CONSENTRY_API_KEY or pass --api-key", ExitCode.USAGE)
        return settings.api_key.get_secret_value()

    def client(self) -> Consentry:
        """A sync SDK client for the configured APIs and key."""
        return self.client_of(Consentry)

    def client_of(self, kind: type[C]) -> C:
        """A sync client of `kind` (the SDK's, or one with more calls)."""
        settings = self.settings()
        return kind(
            self._key(settings),
            consent_url=settings.api_url,
            preferences_url=settings.preferences_url,
        )

    def async_client(self) -> AsyncConsentry:
        """An async SDK client (bulk work: many calls at once)."""
        settings = self.settings()
        return AsyncConsentry(
            self._key(settings),
            consent_url=settings.api_url,
            preferences_url=settings.preferences_url,
        )


def state(ctx: typer.Context, *, as_json: bool = False) -> Cli:
    """The invocation's state (a command run without the root callback gets the defaults);
    `as_json`: the command's `--json`."""
    cli = ctx.find_object(Cli) or ctx.ensure_object(Cli)
    cli.output.json = cli.output.json or as_json
    return cli


def load(settings_class: type[S], **overrides: object) -> S:
    """Settings from the environment; a missing or bad one is a one-line usage error."""
    try:
        return load_settings(settings_class, **overrides)
    except SettingsError as exc:
        raise CliError(str(exc), ExitCode.USAGE) from None
