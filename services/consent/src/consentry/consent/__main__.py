"""`python -m consentry.consent api|relay|migrate|replay`: the consent service's processes."""

from __future__ import annotations

from consentry.consent.app import create_app
from consentry.consent.settings import ApiSettings
from consentry.eventing.migrations import Migration, service_migrations
from consentry.eventing.relay import RelaySettings, run_relay
from consentry.httpapi.service import add_replay, add_worker, service_cli


def migrations() -> list[Migration]:
    """Every migration of the consent database."""
    return service_migrations("consent", "consentry.consent")


cli = service_cli("consent", api_settings=ApiSettings, create_app=create_app, migrations=migrations)


add_worker(cli, "relay", RelaySettings, run_relay, "Publish the consent outbox to Kafka.")
add_replay(cli)


if __name__ == "__main__":
    cli()
