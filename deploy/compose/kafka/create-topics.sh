#!/usr/bin/env bash
# Create consentry's topics on the compose cluster once all three brokers have joined; run by
# the `kafka-init` service (apache/kafka image). Idempotent (--if-not-exists): safe on every
# `docker compose up`. Brokers refuse to auto-create topics, so a topic missing here is an
# error in the process that needs it, not a silently under-replicated topic.
# `make lint` checks this list against the dev stack's (libs/devstack/.../services.py) and the
# Kubernetes KafkaTopics (deploy/k8s/components/kafka-topics).
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:-kafka-1:9092,kafka-2:9092,kafka-3:9092}
BIN=/opt/kafka/bin
WEEK=604800000    # event topics: as long as the outboxes keep events for replay (7 days)
MONTH=2592000000  # dead letters: time to look at them
FOREVER=-1        # the tenant directory: a service that joins later reads it from the start

brokers() {
  "$BIN/kafka-broker-api-versions.sh" --bootstrap-server "$BOOTSTRAP" 2>/dev/null |
    grep -c '(id: ' || true
}

until [[ "$(brokers)" -ge 3 ]]; do
  echo "waiting for 3 brokers ($(brokers) up)"
  sleep 2
done

create() {  # <topic> <partitions> <retention.ms>
  "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$1" --partitions "$2" --replication-factor 3 \
    --config min.insync.replicas=2 --config retention.ms="$3"
}

# Event topics: 12 partitions, the most members one consumer group can use.
create consentry.consent.v1 12 "$WEEK"
create consentry.consent.intake.v1 12 "$WEEK"
create consentry.tenant.v1 12 "$FOREVER"
create consentry.rights.v1 12 "$WEEK"
create consentry.rights.answers.v1 12 "$WEEK"
create consentry.audit.v1 12 "$WEEK"
create consentry.preferences.v1 12 "$WEEK"
create consentry.lists.v1 12 "$WEEK"
create consentry.subprocessor.v1 12 "$WEEK"

# One dead-letter topic per consumer.
create consentry.dlq.consent-intake 3 "$MONTH"
create consentry.dlq.consent-rights-tracker 3 "$MONTH"
create consentry.dlq.audit-appender 3 "$MONTH"
create consentry.dlq.preferences-directory 3 "$MONTH"
create consentry.dlq.preferences-consent-follower 3 "$MONTH"
create consentry.dlq.list-processor 3 "$MONTH"
create consentry.dlq.preferences-rights 3 "$MONTH"
create consentry.dlq.subprocessors-directory 3 "$MONTH"
create consentry.dlq.subprocessor-notifier 3 "$MONTH"

"$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --list
