"""A small SQL migrations runner for asyncpg.

Each service keeps plain, numbered `.sql` files inside its package
(`NNNN_description.sql`, in a `migrations/` folder; the shared eventing tables in
`consentry/eventing/sql/`); `migrate` applies the ones not yet recorded in
`schema_migrations`, each in its own transaction, under an advisory lock so that several
processes starting at once apply each migration exactly once. An applied file whose content
changed is refused (its checksum no longer matches).

Why not a library: the maintained runners (alembic, yoyo) need a synchronous driver and,
for alembic, SQLAlchemy; our services speak asyncpg only and need nothing beyond ordered,
checksummed, transactional SQL files. See docs/adr/0004-migrations.md.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

import asyncpg

from consentry.eventing.db import Connection
from consentry.eventing.logs import get_logger

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_LOCK_KEY = 0x636F6E73656E7472  # "consentr": the advisory lock serialising migrations
log = get_logger(__name__)


class MigrationError(RuntimeError):
    """Migrations cannot be applied (a changed file, a gap, or a failing statement)."""


@dataclass(frozen=True)
class Migration:
    """One migration file: its namespace, version, name, SQL and checksum."""

    namespace: str
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load(namespace: str, package: str, folder: str = "migrations") -> list[Migration]:
    """Read the migrations shipped in `package`/`folder`, ordered by version."""
    root: Traversable = resources.files(package).joinpath(folder)
    found = []
    for entry in root.iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(namespace, int(match[1]), match[2], entry.read_text("utf-8")))
        elif entry.name.endswith(".sql"):
            raise MigrationError(f"{namespace}: badly named migration {entry.name}")
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"{namespace}: migrations must be numbered 1..n, found {versions}")
    return found


def eventing_migrations() -> list[Migration]:
    """The outbox/inbox tables every service database carries."""
    return load("eventing", "consentry.eventing", folder="sql")


def service_migrations(namespace: str, package: str) -> list[Migration]:
    """A service database's migrations: the shared eventing tables first, then its own."""
    return [*eventing_migrations(), *load(namespace, package)]


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    namespace   text        NOT NULL,
    version     integer     NOT NULL,
    name        text        NOT NULL,
    checksum    text        NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (namespace, version)
)
"""
_SELECT_APPLIED = "SELECT namespace, version, checksum FROM schema_migrations"
_INSERT_APPLIED = (
    "INSERT INTO schema_migrations (namespace, version, name, checksum) VALUES ($1, $2, $3, $4)"
)


async def migrate(conn: Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply pending migrations in order; return the ones applied now."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
    try:
        await conn.execute(_CREATE_TABLE)
        applied = {
            (r["namespace"], r["version"]): r["checksum"] for r in await conn.fetch(_SELECT_APPLIED)
        }
        done = []
        for migration in migrations:
            recorded = applied.get((migration.namespace, migration.version))
            if recorded is not None:
                if recorded != migration.checksum:
                    raise MigrationError(
                        f"{migration.namespace} {migration.version:04d}_{migration.name} was "
                        "changed after it was applied; add a new migration instead"
                    )
                continue
            async with conn.transaction():
                try:
                    await conn.execute(migration.sql)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(
                        f"{migration.namespace} {migration.version:04d}_{migration.name}: {exc}"
                    ) from exc
                await conn.execute(
                    _INSERT_APPLIED,
                    migration.namespace,
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            log.info("migration applied", namespace=migration.namespace, version=migration.version)
            done.append(migration)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)


async def migrate_dsn(dsn: str, migrations: list[Migration]) -> list[Migration]:
    """Connect to `dsn`, apply pending migrations, disconnect."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn, migrations)
    finally:
        await conn.close()
