"""The services the dev stack runs: ONE declarative table (adding a service is one entry).

Each entry names the service's own database, the topics it needs, its migration command and
its long-running processes. A process with a `ready_path` is the service's HTTP API: it gets
`CONSENTRY_HTTP_HOST`/`CONSENTRY_HTTP_PORT` and is ready when that path answers 200. Its port
comes from the setting `CONSENTRY_<SERVICE>_PORT` when `DevStackSettings` has one (consent,
audit), else a free port is picked. A service that `answers_rights` reports on erasure and
access requests (`ErasureCompleted` / `AccessPartReady`); the consent service's requests
wait for those of the stack (`rights_env`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

from consentry.eventing import topics

# Environment every child process gets (plus our own environment underneath).
ENV_DATABASE_URL = "CONSENTRY_DATABASE_URL"  # the service's OWN database, never the server
ENV_KAFKA_BOOTSTRAP_SERVERS = "CONSENTRY_KAFKA_BOOTSTRAP_SERVERS"
ENV_HTTP_HOST = "CONSENTRY_HTTP_HOST"  # HTTP processes only
ENV_HTTP_PORT = "CONSENTRY_HTTP_PORT"  # HTTP processes only
ENV_ENVIRONMENT = "CONSENTRY_ENVIRONMENT"
ENV_DEV_API_KEY = "CONSENTRY_DEV_API_KEY"
ENV_DEV_TENANT_ID = "CONSENTRY_DEV_TENANT_ID"
ENV_PUBLIC_URL = "CONSENTRY_PUBLIC_URL"  # where people reach a service's API and pages
# The services whose answers the consent service's rights requests wait for.
ENV_ERASURE_SERVICES = "CONSENTRY_ERASURE_SERVICES"

ENVIRONMENT = "development"
DEV_API_KEY = "consentry-dev-key"  # well-known: accepted in development only
DEV_TENANT_ID = "00000000-0000-4000-8000-000000000001"
ENV_AUDIT_SIGNING_KEY = "CONSENTRY_AUDIT_SIGNING_KEY"
# Well-known: accepted in development only (the audit appender refuses it elsewhere).
DEV_AUDIT_SIGNING_KEY = "Z3XNQzSEBIoBrWruiiOqxE6MDT7qYrL7AEH9JlpaW8E="
READY_PATH = "/healthz"


@dataclass(frozen=True)
class ServiceProcess:
    """One long-running process of a service; `ready_path` makes it the service's HTTP API."""

    name: str
    argv: tuple[str, ...]
    ready_path: str | None = None


@dataclass(frozen=True)
class AppRole:
    """The login role a service's processes use instead of the database owner, and the group
    role (created by the service's migrations) that holds its rights."""

    login: str
    member_of: str


@dataclass(frozen=True)
class Service:
    """A service: its own database, the topics it needs, its migration and its processes."""

    name: str
    database: str
    topics: tuple[str, ...]
    migrate: tuple[str, ...]
    processes: tuple[ServiceProcess, ...]
    app_role: AppRole | None = None  # None: the processes connect as the database owner
    answers_rights: bool = False  # publishes ErasureCompleted / AccessPartReady{service: name}

    @property
    def http(self) -> ServiceProcess | None:
        """The process serving the service's HTTP API, if it has one."""
        served = [process for process in self.processes if process.ready_path is not None]
        if len(served) > 1:
            raise ValueError(f"service {self.name!r}: only one process may serve HTTP")
        return served[0] if served else None


def _module(service: str, command: str) -> tuple[str, ...]:
    return (sys.executable, "-m", f"consentry.{service}", command)


SERVICES: tuple[Service, ...] = (
    Service(
        name="consent",
        database="consentry_consent",
        topics=(
            topics.CONSENT,
            topics.CONSENT_INTAKE,
            topics.TENANT,
            topics.RIGHTS,
            topics.RIGHTS_ANSWERS,
            topics.dead_letter_topic("consent-intake"),
            topics.dead_letter_topic("consent-rights-tracker"),
        ),
        migrate=_module("consent", "migrate"),
        processes=(
            ServiceProcess("api", _module("consent", "api"), ready_path=READY_PATH),
            ServiceProcess("relay", _module("consent", "relay")),
            ServiceProcess("intake", _module("consent", "intake")),
            ServiceProcess("policy-scheduler", _module("consent", "policy-scheduler")),
            ServiceProcess("rights", _module("consent", "rights")),
            ServiceProcess("rights-tracker", _module("consent", "rights-tracker")),
        ),
        # Row-level security (tenant isolation) does not bind a superuser, which the
        # database owner often is: the processes log in as a member of the group role of
        # consent migration 0002 instead.
        app_role=AppRole(login="consentry_consent_app", member_of="consentry_consent_rw"),
        answers_rights=True,
    ),
    Service(
        name="audit",
        database="consentry_audit",
        topics=(topics.AUDIT, topics.dead_letter_topic("audit-appender")),
        migrate=_module("audit", "migrate"),
        processes=(
            ServiceProcess("appender", _module("audit", "appender")),
            ServiceProcess("relay", _module("audit", "relay")),
            ServiceProcess("api", _module("audit", "api"), ready_path=READY_PATH),
        ),
        # The audit log is append-only for its own processes: they may only call audit_append().
        app_role=AppRole(login="consentry_audit_app", member_of="consentry_audit_writer"),
    ),
    Service(
        name="preferences",
        database="consentry_preferences",
        topics=(
            topics.PREFERENCES,
            topics.LISTS,
            topics.dead_letter_topic("preferences-directory"),
            topics.dead_letter_topic("preferences-consent-follower"),
            topics.dead_letter_topic("list-processor"),
            topics.dead_letter_topic("preferences-rights"),
        ),
        migrate=_module("preferences", "migrate"),
        processes=(
            ServiceProcess("api", _module("preferences", "api"), ready_path=READY_PATH),
            ServiceProcess("relay", _module("preferences", "relay")),
            ServiceProcess("directory", _module("preferences", "directory")),
            ServiceProcess("consent-follower", _module("preferences", "consent-follower")),
            ServiceProcess("list-processor", _module("preferences", "list-processor")),
            ServiceProcess("rights", _module("preferences", "rights")),
        ),
        # Row-level security (tenant isolation), as in the consent service.
        app_role=AppRole(login="consentry_preferences_app", member_of="consentry_preferences_rw"),
        answers_rights=True,
    ),
    Service(
        name="subprocessors",
        database="consentry_subprocessors",
        topics=(
            topics.SUBPROCESSOR,
            topics.dead_letter_topic("subprocessors-directory"),
            topics.dead_letter_topic("subprocessor-notifier"),
        ),
        migrate=_module("subprocessors", "migrate"),
        processes=(
            ServiceProcess("api", _module("subprocessors", "api"), ready_path=READY_PATH),
            ServiceProcess("relay", _module("subprocessors", "relay")),
            ServiceProcess("directory", _module("subprocessors", "directory")),
            ServiceProcess("notifier", _module("subprocessors", "notifier")),
            ServiceProcess("sender", _module("subprocessors", "sender")),
        ),
        app_role=AppRole(
            login="consentry_subprocessors_app", member_of="consentry_subprocessors_rw"
        ),
        answers_rights=True,  # the notifier: its (empty) erasure report, its export part
    ),
)


def child_env(
    *, database_dsn: str, bootstrap: str, http_host: str, http_port: int | None
) -> dict[str, str]:
    """The environment of one service process (to be laid over the parent's environment)."""
    env = {
        ENV_DATABASE_URL: database_dsn,
        ENV_KAFKA_BOOTSTRAP_SERVERS: bootstrap,
        ENV_ENVIRONMENT: ENVIRONMENT,
        ENV_DEV_API_KEY: DEV_API_KEY,
        ENV_DEV_TENANT_ID: DEV_TENANT_ID,
        ENV_AUDIT_SIGNING_KEY: DEV_AUDIT_SIGNING_KEY,
    }
    if http_port is not None:
        env |= {ENV_HTTP_HOST: http_host, ENV_HTTP_PORT: str(http_port)}
    return env


def rights_env(services: Iterable[Service]) -> dict[str, str]:
    """What the consent service's rights requests wait for: the services among `services`
    that answer them (`CONSENTRY_ERASURE_SERVICES`; nothing when none does)."""
    names = [service.name for service in services if service.answers_rights]
    return {ENV_ERASURE_SERVICES: ",".join(names)} if names else {}
