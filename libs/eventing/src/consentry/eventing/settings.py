"""Typed settings shared by every consentry process (pydantic-settings, `CONSENTRY_` prefix).

Each process defines one settings class built from the mixins here and loads it in its
factory with `load_settings`, never at import time.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "CONSENTRY_"


class Environment(StrEnum):
    """Where a process runs; development relaxes the refusal of well-known dev secrets."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


class ConsentrySettings(BaseSettings):
    """Base of every process's settings: environment and logging."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    environment: Environment = Environment.PRODUCTION
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"


def process_name(argv: list[str] | None = None) -> str:
    """What this process is, for PostgreSQL's `application_name`: `consentry <service>
    <command>` for `python -m consentry.<service> <command>`, else the program's name."""
    argv = sys.argv if argv is None else argv
    program = Path(argv[0]) if argv and argv[0] else Path("python")
    if program.name == "__main__.py" and program.parent.parent.name == "consentry":
        command = argv[1] if len(argv) > 1 and not argv[1].startswith("-") else ""
        return f"consentry {program.parent.name} {command}".strip()[:63]
    return program.name[:63]


class DatabaseSettings(ConsentrySettings):
    """A process that owns a PostgreSQL database (the service's own, never another's)."""

    database_url: str = Field(description="DSN of this service's own PostgreSQL database")
    database_pool_min: int = Field(default=2, ge=1)
    database_pool_max: int = Field(default=10, ge=1)
    # Shown in pg_stat_activity and the server's log for every session of this process.
    database_application_name: str = Field(default_factory=process_name, max_length=63)


class KafkaSettings(ConsentrySettings):
    """A process that talks to Kafka.

    `kafka_enable_idempotence` is off by default because the development broker (Tansu)
    does not support it; correctness never depends on it (consumers are idempotent).
    """

    kafka_bootstrap_servers: str = Field(description="comma-separated host:port list")
    kafka_client_id: str = "consentry"
    kafka_enable_idempotence: bool = False
    kafka_compression: Literal["gzip", "snappy", "lz4", "zstd"] | None = None
    kafka_request_timeout_ms: int = Field(default=30_000, ge=1_000)
    # A fetch is answered once it has `kafka_fetch_min_bytes`, or after at most
    # `kafka_fetch_max_wait_ms`. The defaults are Apache Kafka's own: it answers as soon as
    # data arrives, so the wait costs no latency there. The development broker notices the
    # minimum only now and then during the wait (a larger minimum: it holds the whole wait)
    # and spends CPU on every fetch, so the dev stack and the tests set their own pair for it
    # (consentry.devstack.broker.TANSU_CLIENT_ENV, ADR 0002).
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=1, le=10_000)
    kafka_fetch_min_bytes: int = Field(default=1, ge=1, le=64 * 1024 * 1024)
    # Consumer group session: a dead member's partitions move after this long. Apache Kafka
    # refuses values below its group.min.session.timeout.ms (6 s by default); the development
    # broker holds every group join for half of it, so the dev stack and the tests shorten it
    # (consentry.devstack.broker.TANSU_CLIENT_ENV).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)


class SettingsError(RuntimeError):
    """A setting is missing or invalid; the message names the environment variable."""


S = TypeVar("S", bound=BaseSettings)


def load_settings(cls: type[S], **overrides: object) -> S:
    """Build `cls` from the environment, naming the variable of each missing/invalid setting."""
    try:
        return cls(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            variable = f"{ENV_PREFIX}{field.upper()}"
            problems.append(f"{variable}: {error['msg']}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None
