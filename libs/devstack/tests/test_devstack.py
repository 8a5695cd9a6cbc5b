"""DevStack with stand-in services on the session's servers; settings; the services table."""

from __future__ import annotations

import asyncio
import io
import socket
import sys
import textwrap
import uuid

import asyncpg
import pytest

from consentry.audit.worker import AUDITED_TOPICS
from consentry.devstack.postgres import drop_database
from consentry.devstack.processes import http_status
from consentry.devstack.services import (
    DEV_API_KEY,
    ENV_DATABASE_URL,
    ENV_HTTP_PORT,
    SERVICES,
    Service,
    ServiceProcess,
    rights_env,
)
from consentry.devstack.stack import DevStack, DevStackError, DevStackSettings, redact
from consentry.eventing import catalogue, topics

# Stand-in for `python -m consentry.<svc> migrate|api|worker`: checks its environment.
STANDIN = textwrap.dedent("""
    import asyncio, http.server, os, sys
    command, env = sys.argv[1], os.environ
    assert env["CONSENTRY_ENVIRONMENT"] == "development" and env["CONSENTRY_DEV_API_KEY"]
    print(command, env["CONSENTRY_DATABASE_URL"].rsplit("/", 1)[1], flush=True)
    if command == "migrate":
        import asyncpg
        async def migrate():
            conn = await asyncpg.connect(env["CONSENTRY_DATABASE_URL"])
            await conn.execute("CREATE TABLE IF NOT EXISTS migrated (x int)")
            await conn.close()
        asyncio.run(migrate())
    elif command == "api":
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200 if self.path == "/healthz" else 404)
                self.end_headers()
            def log_message(self, *args):
                pass
        address = (env["CONSENTRY_HTTP_HOST"], int(env["CONSENTRY_HTTP_PORT"]))
        http.server.HTTPServer(address, Handler).serve_forever()
    else:
        import time
        time.sleep(600)
""")


def _standin(command: str) -> tuple[str, ...]:
    return (sys.executable, "-c", STANDIN, command)


STANDINS = (
    Service(
        name="consent",
        database="consentry_consent",
        topics=("ct.consent.v1",),
        migrate=_standin("migrate"),
        processes=(
            ServiceProcess("api", _standin("api"), ready_path="/healthz"),
            ServiceProcess("relay", _standin("worker")),
        ),
    ),
    Service(
        name="worker_only",
        database="consentry_worker_only",
        topics=("ct.consent.v1", "ct.dlq.worker"),
        migrate=_standin("migrate"),
        processes=(ServiceProcess("worker", _standin("worker")),),
    ),
)


@pytest.mark.integration
async def test_dev_stack_with_stand_in_services(pg_server_dsn: str, kafka_bootstrap: str) -> None:
    settings = DevStackSettings(
        database_url=pg_server_dsn, kafka_bootstrap_servers=kafka_bootstrap, consent_port=0
    )
    suffix = uuid.uuid4().hex[:8]
    names = {"consent": f"ct_{suffix}_consent", "worker_only": f"ct_{suffix}_worker"}
    out = io.StringIO()
    try:
        async with DevStack(settings, services=STANDINS, database_names=names, out=out) as stack:
            assert stack.server_dsn == pg_server_dsn
            assert stack.bootstrap == kafka_bootstrap
            assert stack.database_dsn("consent").endswith(f"/{names['consent']}")
            assert await http_status(stack.api_url("consent") + "/healthz") == 200
            conn = await asyncpg.connect(stack.database_dsn("worker_only"))
            assert await conn.fetchval("SELECT count(*) FROM migrated") == 0
            await conn.close()
            table = stack.describe()
            assert f"docs {stack.api_url('consent')}/docs" in table
            assert DEV_API_KEY in table
            with pytest.raises(KeyError, match="'worker_only' has no HTTP API"):
                stack.api_url("worker_only")
            # A worker has no readiness probe: wait for its first line (slow under load).
            async with asyncio.timeout(20):
                while f"worker_only.worker | worker {names['worker_only']}" not in out.getvalue():
                    await asyncio.sleep(0.05)
    finally:
        for name in names.values():
            await drop_database(pg_server_dsn, name)
    output = out.getvalue()
    assert f"consent.migrate | migrate {names['consent']}" in output
    assert f"worker_only.worker | worker {names['worker_only']}" in output


@pytest.mark.integration
async def test_a_busy_fixed_port_is_a_clear_error(pg_server_dsn: str, kafka_bootstrap: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        settings = DevStackSettings(
            database_url=pg_server_dsn,
            kafka_bootstrap_servers=kafka_bootstrap,
            consent_port=sock.getsockname()[1],
        )
        with pytest.raises(DevStackError, match="is busy; set CONSENTRY_CONSENT_PORT"):
            names = {"consent": f"ct_{uuid.uuid4().hex[:8]}_busy"}
            async with DevStack(
                settings, services=STANDINS[:1], run_migrations=False, database_names=names
            ):
                pass
        conn = await asyncpg.connect(pg_server_dsn)
        try:  # it failed before creating anything
            found = await conn.fetchval(
                "SELECT count(*) FROM pg_database WHERE datname = $1", names["consent"]
            )
        finally:
            await conn.close()
        assert found == 0


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSENTRY_AUDIT_PORT", "0")
    monkeypatch.setenv("CONSENTRY_DEVSTACK_DIR", "/var/tmp/x")
    monkeypatch.delenv("CONSENTRY_DATABASE_URL", raising=False)
    settings = DevStackSettings()
    assert settings.database_url is None
    assert (settings.http_port("consent"), settings.http_port("audit")) == (8001, 0)
    assert settings.http_port("newcomer") == 0
    assert str(settings.devstack_dir) == "/var/tmp/x"


def test_the_services_table() -> None:
    names = [s.name for s in SERVICES]
    assert names == ["consent", "audit", "preferences", "subprocessors"]
    assert [s.database for s in SERVICES] == [f"consentry_{name}" for name in names]
    created = [t for s in SERVICES for t in s.topics]
    assert len(created) == len(set(created)), "each topic is created by one service"
    # Every catalogued event's topic exists, and so does every topic the audit log follows.
    assert {event.topic for event in catalogue.CATALOGUE.values()} <= set(created)
    assert set(AUDITED_TOPICS) <= set(created)
    assert topics.TENANT not in AUDITED_TOPICS  # wrapped subject keys stay out of the log
    for service in SERVICES:
        assert service.migrate[1:] == ("-m", f"consentry.{service.name}", "migrate")
        assert service.http is not None
        assert service.http.name == "api"
        assert service.app_role is not None  # no service's processes run as the owner
    assert (ENV_DATABASE_URL, ENV_HTTP_PORT) == ("CONSENTRY_DATABASE_URL", "CONSENTRY_HTTP_PORT")
    # Rights requests wait for every service of the stack that answers them, and only those.
    assert rights_env(SERVICES) == {
        "CONSENTRY_ERASURE_SERVICES": "consent,preferences,subprocessors"
    }
    assert rights_env(s for s in SERVICES if s.name in {"consent", "audit"}) == {
        "CONSENTRY_ERASURE_SERVICES": "consent"
    }
    assert rights_env(STANDINS) == {}


def test_redact_hides_the_password() -> None:
    assert redact("postgresql://app:s3cret@h:5432/db") == "postgresql://app:***@h:5432/db"
    assert redact("postgresql://postgres@h:5432/db") == "postgresql://postgres@h:5432/db"
