-- Transactional outbox and idempotent inbox, shared by every service database.

CREATE TABLE eventing_outbox (
    position      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      uuid        NOT NULL UNIQUE,           -- ce_id
    topic         text        NOT NULL,
    message_key   bytea       NOT NULL,                  -- aggregate id: <tenant>/<subject ref>
    event_type    text        NOT NULL,                  -- ce_type
    headers       jsonb       NOT NULL,                  -- every Kafka header, as sent
    payload       bytea       NOT NULL,                  -- the protobuf message
    created_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    published_at  timestamptz
);

CREATE INDEX eventing_outbox_unpublished ON eventing_outbox (position) WHERE published_at IS NULL;
CREATE INDEX eventing_outbox_created_at ON eventing_outbox (created_at);

-- Wake the relay when rows are committed (NOTIFY is delivered at commit, once per
-- transaction and channel); the relay also polls, so a lost notification only adds latency.
CREATE FUNCTION eventing_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('eventing_outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER eventing_outbox_notify
    AFTER INSERT ON eventing_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION eventing_outbox_notify();

CREATE TABLE eventing_inbox (
    consumer      text        NOT NULL,
    event_id      text        NOT NULL,                  -- ce_id (any string, per CloudEvents)
    processed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (consumer, event_id)
);
