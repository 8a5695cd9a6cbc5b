"""pytest fixtures: a real PostgreSQL server and broker per session, a fresh database per test.

Loaded with `-p consentry.devstack.pytest_plugin`; importing it starts nothing. The servers
start on first use: embedded ones unless `CONSENTRY_DATABASE_URL` /
`CONSENTRY_KAFKA_BOOTSTRAP_SERVERS` point at real ones.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import os
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

_LABEL = re.compile(r"^[a-z0-9_]{1,50}$")

FreshDatabase = Callable[[str], Awaitable[str]]


class ConftestDirectory(pytest.Package):
    """A test directory with a conftest.py but no `__init__.py`, collected as a package.

    pytest scopes a "package" fixture to the nearest `Package` node and, in a plain
    directory, to the whole session: the stack a conftest starts for its directory (e2e, the
    SDK's, the CLI's, the fault suite's) would live until the session ends, every one of them
    holding its processes, ports and PostgreSQL connections while the later directories run
    (four stacks at once exhausted a stock PostgreSQL's 100 connections). As a package, the
    directory's "package" fixtures end with its last test. Our test directories are not
    Python packages on purpose (two `tests/conftest.py` would import under one name)."""

    def setup(self) -> None:
        """Nothing to import: the directory has no `__init__.py`."""


def pytest_collect_directory(path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Directories with a conftest.py and no `__init__.py` are `ConftestDirectory` packages."""
    if (path / "conftest.py").is_file() and not (path / "__init__.py").exists():
        collector: pytest.Collector = ConftestDirectory.from_parent(parent, path=path)
        return collector
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs two pytest-xdist workers with `--dist loadfile`, which we extend: a
    directory whose conftest.py has "package" fixtures (a whole stack: e2e, the SDK's, the
    CLI's, the fault suite's) goes to one worker as a whole, so its stack starts once; any
    other test file goes as a whole (its module fixtures: databases, workers). The stacks'
    directories, the longest units, go out first: the files fill in around them, and no
    worker is left alone with a stack at the end. Other `--dist` modes are xdist's own.
    (xdist's `loadgroup` cannot do it: under pytest 9 its group marker no longer reaches the
    scheduler.)"""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    root = config.rootpath

    class SetupUnitScheduling(LoadFileScheduling):  # type: ignore[misc]  # xdist is untyped
        def _split_scope(self, nodeid: str) -> str:
            return setup_unit(root, nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            # xdist queues units by their number of tests; a directory's go first.
            directories = [unit for unit in self.workqueue if not unit.endswith(".py")]
            for unit in reversed(directories):
                self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return SetupUnitScheduling(config, log)


# Sections for the end of the run's terminal summary (`report_section`).
_SECTIONS = pytest.StashKey[list[tuple[str, str]]]()
_WORKER_SECTIONS = "consentry_summary_sections"  # their key in an xdist worker's output


def report_section(config: pytest.Config, title: str, text: str) -> None:
    """Add a section to the end of the run's terminal summary (the fault suite's figures).
    Call it by `pytest_sessionfinish` at the latest. In an xdist worker, whose own terminal
    nobody sees, the section travels to the controller, which prints it."""
    config.stash.setdefault(_SECTIONS, []).append((title, text))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker: hand the reported sections to the controller (after the other
    `pytest_sessionfinish` hooks, which may report some; xdist sends `workeroutput` once
    they have all run)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None:
        sections: list[tuple[str, str]] = session.config.stash.get(_SECTIONS, [])
        output[_WORKER_SECTIONS] = list(sections)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: object) -> None:
    """In the xdist controller: keep the sections a finished worker reported."""
    sections = getattr(node, "workeroutput", {}).get(_WORKER_SECTIONS, [])
    node.config.stash.setdefault(_SECTIONS, []).extend(tuple(item) for item in sections)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the reported sections, a worker's as well as this process's."""
    for title, text in terminalreporter.config.stash.get(_SECTIONS, []):
        terminalreporter.section(title)
        terminalreporter.write(text)


def setup_unit(root: Path, nodeid: str) -> str:
    """What one worker must run as a whole for `nodeid`: the directory (relative to `root`)
    of the nearest conftest.py with "package" fixtures, else the test's file."""
    module = nodeid.split("::", 1)[0]
    for directory in (root / module).parents:
        if directory == root or root not in directory.parents:
            break
        if _has_package_fixtures(directory / "conftest.py"):
            return directory.relative_to(root).as_posix()
    return module


@functools.cache
def _has_package_fixtures(conftest: Path) -> bool:
    """Whether `conftest` declares a fixture with `scope="package"` (read, not imported)."""
    if not conftest.is_file():
        return False
    return any(
        isinstance(node, ast.keyword)
        and node.arg == "scope"
        and isinstance(node.value, ast.Constant)
        and node.value.value == "package"
        for node in ast.walk(ast.parse(conftest.read_text(), str(conftest)))
    )


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server for the session: `CONSENTRY_DATABASE_URL` or an embedded one."""
    configured = os.environ.get("CONSENTRY_DATABASE_URL")
    if configured:
        yield configured
        return
    # Imported here, not at the top: loading the plugin must stay cheap (no asyncpg, aiokafka).
    from consentry.devstack.postgres import EmbeddedPostgres

    with EmbeddedPostgres(throwaway=True) as server:
        yield server.dsn


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a broker for the session: the configured one or an embedded Tansu."""
    with own_broker() as bootstrap:
        yield bootstrap


@contextlib.contextmanager
def own_broker() -> Iterator[str]:
    """A broker of the caller's own: a fresh embedded Tansu (the configured broker when
    `CONSENTRY_KAFKA_BOOTSTRAP_SERVERS` is set). A whole stack under test wants one: the
    session's broker carries every other test's events on the same topics, which the stack's
    consumers (from the earliest offset, as new groups) would work through first."""
    configured = os.environ.get("CONSENTRY_KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    from consentry.devstack.broker import TANSU_CLIENT_ENV, EmbeddedBroker

    with EmbeddedBroker() as broker, environment_defaults(TANSU_CLIENT_ENV):
        yield broker.bootstrap


@contextlib.contextmanager
def environment_defaults(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables not set already (settings built in the tests and the
    processes they start read them); restore the environment afterwards."""
    added = {name: value for name, value in values.items() if name not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@pytest_asyncio.fixture(loop_scope="session")
async def fresh_database(pg_server_dsn: str) -> AsyncIterator[FreshDatabase]:
    """Factory: `await fresh_database("consent")` makes `ct_<hex>_consent`, dropped afterwards."""
    from consentry.devstack.postgres import drop_database, ensure_database

    created: list[str] = []

    async def create(label: str) -> str:
        if not _LABEL.match(label):
            raise ValueError(f"database label {label!r} must match {_LABEL.pattern}")
        name = f"ct_{secrets.token_hex(4)}_{label}"
        dsn = await ensure_database(pg_server_dsn, name)
        created.append(name)
        return dsn

    yield create
    for name in created:
        await drop_database(pg_server_dsn, name)
