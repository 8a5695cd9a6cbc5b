"""The dev stack as one async context manager: servers, databases, topics, migrations, services.

async with DevStack(DevStackSettings(), start_processes=False) as stack:
    dsn = stack.database_dsn("consent")
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from aiokafka.errors import KafkaError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from consentry.devstack.broker import (
    TANSU_CLIENT_ENV,
    BrokerError,
    EmbeddedBroker,
    TopicSpec,
    create_topics,
)
from consentry.devstack.pgdata import PostgresError
from consentry.devstack.postgres import (
    EmbeddedPostgres,
    ensure_database,
    ensure_login_role,
    with_user,
)
from consentry.devstack.processes import (
    ChildExitedError,
    ProcessNotReadyError,
    ProcessSpec,
    Supervisor,
    run_once,
)
from consentry.devstack.services import (
    DEV_API_KEY,
    DEV_TENANT_ID,
    ENV_PUBLIC_URL,
    SERVICES,
    Service,
    child_env,
    rights_env,
)
from consentry.devstack.spawning import free_port, port_is_free


class DevStackError(RuntimeError):
    """The dev stack cannot start as configured (e.g. a fixed port is busy)."""


# What can go wrong for reasons outside a program that runs the stack: worth one paragraph
# to the person at the terminal, not a traceback.
STARTUP_FAILURES: tuple[type[BaseException], ...] = (
    ChildExitedError,
    ProcessNotReadyError,
    PostgresError,
    BrokerError,
    DevStackError,
    OSError,
    asyncpg.PostgresError,
    KafkaError,
)


class DevStackSettings(BaseSettings):
    """Settings of `python -m consentry.devstack run` (environment variables `CONSENTRY_*`)."""

    model_config = SettingsConfigDict(env_prefix="CONSENTRY_", extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None, description="a real PostgreSQL server (its maintenance database) to use"
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None, description="a real Kafka-protocol broker to use"
    )
    devstack_dir: Path = Field(
        default=Path(".devstack"), description="embedded PostgreSQL data, kept across runs"
    )
    http_host: str = "127.0.0.1"
    consent_port: int = Field(default=8001, ge=0, le=65535, description="0 = a free port")
    audit_port: int = Field(default=8002, ge=0, le=65535, description="0 = a free port")
    preferences_port: int = Field(default=8003, ge=0, le=65535, description="0 = a free port")
    subprocessors_port: int = Field(default=8004, ge=0, le=65535, description="0 = a free port")
    topic_partitions: int = Field(default=6, ge=1)

    def http_port(self, service: str) -> int:
        """The configured port of a service's HTTP API (`<service>_port`; 0 = pick a free one)."""
        field = f"{service}_port"
        return int(getattr(self, field)) if field in type(self).model_fields else 0


def redact(dsn: str) -> str:
    """A DSN fit for printing: its password, if any, replaced by `***`."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class DevStack:
    """PostgreSQL and the broker (embedded unless configured), one database per service,
    topics, migrations and (optionally) every service process; stopped in reverse order."""

    def __init__(
        self,
        settings: DevStackSettings | None = None,
        *,
        services: Sequence[Service] = SERVICES,
        start_processes: bool = True,
        run_migrations: bool = True,
        app_roles: bool | None = None,
        throwaway: bool = False,
        durable: bool | None = None,
        database_names: Mapping[str, str] | None = None,
        log_dir: Path | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.settings = settings if settings is not None else DevStackSettings()
        self.services = tuple(services)
        self._start_processes = start_processes
        self._run_migrations = run_migrations
        self._app_roles = app_roles
        self._throwaway = throwaway
        self._durable = durable  # embedded PostgreSQL: None = durable unless throw-away
        self._database_names = dict(database_names or {})
        self._log_dir = log_dir
        self._out = out if out is not None else sys.stdout
        self._exit = contextlib.AsyncExitStack()
        self._supervisor: Supervisor | None = None
        self._server_dsn: str | None = None
        self._bootstrap: str | None = None
        self._database_dsns: dict[str, str] = {}
        self._process_dsns: dict[str, str] = {}  # as the service's app role, where it has one
        self._ports: dict[str, int] = {}
        self._embedded: list[str] = []

    @property
    def server_dsn(self) -> str:
        """DSN of the PostgreSQL server (its `postgres` maintenance database)."""
        return _started(self._server_dsn)

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers (`host:port`)."""
        return _started(self._bootstrap)

    def database_dsn(self, service: str) -> str:
        """DSN of one service's own database."""
        return self._lookup(self._database_dsns, service, "database")

    def api_url(self, service: str) -> str:
        """Base URL of one service's HTTP API (`http://host:port`)."""
        port = self._lookup(self._ports, service, "HTTP API (are processes started?)")
        return f"http://{self.settings.http_host}:{port}"

    async def wait(self) -> None:
        """Wait forever, or until a service process exits (then raise `ChildExitedError`)."""
        if self._supervisor is None:
            await _forever()
        else:
            await self._supervisor.wait()

    def describe(self) -> str:
        """A table of where everything listens, for people."""
        pg = "embedded, data in " + (
            "a temporary directory"
            if self._throwaway
            else str(self.settings.devstack_dir / "pgdata")
        )
        kafka = "embedded Tansu, memory storage: topics and messages are lost on stop"
        rows = [("PostgreSQL", redact(self.server_dsn), pg if "postgres" in self._embedded else "")]
        rows += [
            (f"  {name}", redact(dsn), self._role_note(name))
            for name, dsn in self._database_dsns.items()
        ]
        rows.append(("Kafka broker", self.bootstrap, kafka if "broker" in self._embedded else ""))
        for name in self._ports:
            url = self.api_url(name)
            rows.append((f"{name} API", url, f"docs {url}/docs"))
        rows.append(("Dev API key", DEV_API_KEY, f"tenant {DEV_TENANT_ID}"))
        width = max(len(row[0]) for row in rows) + 2
        lines = [f"  {label:<{width}}{value}  {note}".rstrip() for label, value, note in rows]
        return "\n".join(["consentry dev stack is running:", *lines])

    async def __aenter__(self) -> DevStack:
        try:
            await self._start()
        except BaseException:
            await self._exit.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._exit.aclose()

    async def _start(self) -> None:
        # EmbeddedPostgres/EmbeddedBroker.start() block (~1 s): acceptable while starting up, and
        # it spawns from the loop's own thread, which the children's death signal is tied to.
        settings = self.settings
        if self._start_processes:
            self._reserve_ports()  # first: a busy port fails before anything is created
        if settings.database_url:
            self._server_dsn = settings.database_url
        else:
            pg = (
                EmbeddedPostgres(throwaway=True, durable=self._durable)
                if self._throwaway
                else EmbeddedPostgres(settings.devstack_dir / "pgdata", durable=self._durable)
            )
            self._exit.callback(pg.stop)
            self._server_dsn = pg.start()
            self._embedded.append("postgres")
        if settings.kafka_bootstrap_servers:
            self._bootstrap = settings.kafka_bootstrap_servers
        else:
            broker = EmbeddedBroker()
            self._exit.callback(broker.stop)
            self._bootstrap = broker.start()
            self._embedded.append("broker")
        names = dict.fromkeys(topic for service in self.services for topic in service.topics)
        specs = [TopicSpec(name, partitions=settings.topic_partitions) for name in names]
        await create_topics(self.bootstrap, specs)
        for service in self.services:
            database = self._database_names.get(service.name, service.database)
            self._database_dsns[service.name] = await ensure_database(self.server_dsn, database)
        if self._run_migrations:
            for service in self.services:
                env = self._env(service, http=False, owner=True)
                spec = ProcessSpec(f"{service.name}.migrate", list(service.migrate), env)
                await run_once(spec, out=self._out)
            await self._create_app_roles()
        if self._start_processes:
            self._supervisor = Supervisor(out=self._out, log_dir=self._log_dir)
            self._exit.push_async_callback(self._supervisor.stop)
            await self._supervisor.start(self._process_specs())

    def _reserve_ports(self) -> None:
        host = self.settings.http_host
        for service in self.services:
            if service.http is None:
                continue
            port = self.settings.http_port(service.name) or free_port(host)
            if not port_is_free(host, port):
                raise DevStackError(
                    f"port {port} on {host} for the {service.name} API is busy; set "
                    f"CONSENTRY_{service.name.upper()}_PORT to another port (0 = any free port)"
                )
            self._ports[service.name] = port

    def _role_note(self, service: str) -> str:
        process_dsn = self._process_dsns.get(service)
        if process_dsn is None:
            return ""
        return f"its processes log in as {urlsplit(process_dsn).username} (restricted)"

    async def _create_app_roles(self) -> None:
        """Log the processes in as their service's restricted role (embedded PostgreSQL by
        default, where we set the authentication; `app_roles=True` forces it elsewhere)."""
        wanted = "postgres" in self._embedded if self._app_roles is None else self._app_roles
        for service in self.services:
            role = service.app_role
            if role is None or not wanted:
                continue
            dsn = self.database_dsn(service.name)
            await ensure_login_role(dsn, role.login, role.member_of)
            self._process_dsns[service.name] = with_user(dsn, role.login)

    def _env(self, service: Service, *, http: bool, owner: bool = False) -> dict[str, str]:
        own = self.database_dsn(service.name)
        env = child_env(
            database_dsn=own if owner else self._process_dsns.get(service.name, own),
            bootstrap=self.bootstrap,
            http_host=self.settings.http_host,
            http_port=self._ports[service.name] if http else None,
        )
        if "broker" in self._embedded:  # shorter group sessions, unless set already
            env |= {k: v for k, v in TANSU_CLIENT_ENV.items() if k not in os.environ}
        # Rights requests wait for the services of this stack that answer them.
        env |= rights_env(self.services)
        if service.http is not None and service.name in self._ports:
            # Where people and recipients reach the service (unsubscribe pages, webhook
            # acknowledgements): its API on this machine.
            env[ENV_PUBLIC_URL] = self.api_url(service.name)
        return env

    def _process_specs(self) -> list[ProcessSpec]:
        specs = []
        for service in self.services:
            for process in service.processes:
                http = process.ready_path is not None
                ready = f"{self.api_url(service.name)}{process.ready_path}" if http else None
                env = self._env(service, http=http)
                specs.append(
                    ProcessSpec(f"{service.name}.{process.name}", [*process.argv], env, ready)
                )
        return specs

    def _lookup(self, table: Mapping[str, str] | Mapping[str, int], service: str, what: str) -> str:
        if service not in table:
            known = ", ".join(table) or "none (is the stack started?)"
            raise KeyError(f"service {service!r} has no {what}; known: {known}")
        return str(table[service])


def _started(value: str | None) -> str:
    if value is None:
        raise DevStackError("the dev stack is not started (use `async with DevStack(...)`)")
    return value


async def _forever() -> None:
    await asyncio.Event().wait()
