"""`python -m consentry.preferences api|relay|directory|consent-follower|list-processor|rights|
migrate|replay`: the preferences service's processes."""

from __future__ import annotations

from consentry.eventing.migrations import Migration, service_migrations
from consentry.eventing.relay import RelaySettings, run_relay
from consentry.httpapi.service import add_replay, add_worker, service_cli
from consentry.preferences.app import create_app
from consentry.preferences.consentcopy.follower import run_consent_follower
from consentry.preferences.directory.follower import run_directory
from consentry.preferences.lists.processor import run_list_processor
from consentry.preferences.rights.worker import RightsSettings, run_rights
from consentry.preferences.settings import (
    ApiSettings,
    ConsentFollowerSettings,
    DirectorySettings,
    ListProcessorSettings,
)


def migrations() -> list[Migration]:
    """Every migration of the preferences database."""
    return service_migrations("preferences", "consentry.preferences")


cli = service_cli(
    "preferences",
    api_settings=ApiSettings,
    create_app=create_app,
    migrations=migrations,
    app_factory="consentry.preferences.app:app_from_environment",
)

add_worker(cli, "relay", RelaySettings, run_relay, "Publish the preferences outbox to Kafka.")
add_worker(
    cli,
    "directory",
    DirectorySettings,
    run_directory,
    "Keep the replica of tenants and API keys from the tenant topic (ADR 0008).",
)
add_worker(
    cli,
    "consent-follower",
    ConsentFollowerSettings,
    run_consent_follower,
    "Keep this service's copy of consent state from the consent topic.",
)
add_worker(
    cli,
    "list-processor",
    ListProcessorSettings,
    run_list_processor,
    "Maintain marketing-list membership and suppression from preference and consent events.",
)
add_worker(
    cli,
    "rights",
    RightsSettings,
    run_rights,
    "Erase subjects (crypto-shredding) and answer access requests; report to the request.",
)
add_replay(cli)


if __name__ == "__main__":
    cli()
