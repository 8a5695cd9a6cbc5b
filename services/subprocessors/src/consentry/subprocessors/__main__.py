"""`python -m consentry.subprocessors api|directory|notifier|sender|relay|migrate|replay`: the
subprocessors service's processes."""

from __future__ import annotations

from consentry.eventing.migrations import Migration, service_migrations
from consentry.eventing.relay import RelaySettings, run_relay
from consentry.httpapi.service import add_replay, add_worker, service_cli
from consentry.subprocessors.app import create_app
from consentry.subprocessors.directory.follower import run_directory
from consentry.subprocessors.notifier.sender import run_sender
from consentry.subprocessors.notifier.worker import run_notifier
from consentry.subprocessors.settings import (
    ApiSettings,
    DirectorySettings,
    NotifierSettings,
    SenderSettings,
)


def migrations() -> list[Migration]:
    """Every migration of the subprocessors database."""
    return service_migrations("subprocessors", "consentry.subprocessors")


cli = service_cli(
    "subprocessors",
    api_settings=ApiSettings,
    create_app=create_app,
    migrations=migrations,
    app_factory="consentry.subprocessors.app:app_from_environment",
)

add_worker(
    cli,
    "directory",
    DirectorySettings,
    run_directory,
    "Keep the replica of tenants and API keys from the tenant topic (ADR 0008).",
)
add_worker(
    cli,
    "notifier",
    NotifierSettings,
    run_notifier,
    "Make deliveries from erasure requests and consent withdrawals (faust) and send them; "
    "answer rights requests (this service's erasure report and access-export part).",
)
add_worker(
    cli, "sender", SenderSettings, run_sender, "Send due deliveries (next to the notifier's)."
)
add_worker(cli, "relay", RelaySettings, run_relay, "Publish the subprocessors outbox to Kafka.")
add_replay(cli)


if __name__ == "__main__":
    cli()
