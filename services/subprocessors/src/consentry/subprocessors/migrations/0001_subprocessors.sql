-- The subprocessors database: the API-key replica of the tenant directory, the registry of
-- recipients (each with its sealed webhook signing secret), the notices the notifier made
-- from erasure requests and consent withdrawals, and one delivery per notice and recipient
-- (a durable work queue: the sender claims due rows). Tenant isolation by row-level
-- security, as in the other services (docs/adr/0007-tenant-isolation-rls.md).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'consentry_subprocessors_rw') THEN
        CREATE ROLE consentry_subprocessors_rw NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
END;
$$;

CREATE FUNCTION consentry_tenant() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT NULLIF(current_setting('consentry.tenant_id', true), '')::uuid
$$;

CREATE FUNCTION consentry_isolate_tenant(tbl regclass, col name DEFAULT 'tenant_id')
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s USING (%I = consentry_tenant()) '
        'WITH CHECK (%I = consentry_tenant())', tbl, col, col);
END;
$$;

-- API keys as announced by the consent service (topic consentry.tenant.v1, ADR 0008): only
-- SHA-256 of the secret. The same table and lookup function as in the preferences service,
-- so the shared DbKeyResolver (consentry.httpapi.keys) and directory follower work here.
CREATE TABLE api_keys (
    id           text        PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    scopes       text[]      NOT NULL,
    secret_hash  bytea       NOT NULL CHECK (length(secret_hash) = 32),
    issued_at    timestamptz NOT NULL,
    revoked_at   timestamptz
);
SELECT consentry_isolate_tenant('api_keys');

-- Resolving a presented key before its tenant is known (see consent migration 0003).
CREATE POLICY api_key_lookup ON api_keys FOR SELECT
    USING (id = current_setting('consentry.api_key_lookup', true));

CREATE FUNCTION consentry_resolve_api_key(key_id text)
RETURNS TABLE (tenant_id uuid, scopes text[], secret_hash bytea, revoked_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.api_key_lookup', true), '');
BEGIN
    PERFORM set_config('consentry.api_key_lookup', key_id, true);
    RETURN QUERY
        SELECT k.tenant_id, k.scopes, k.secret_hash, k.revoked_at
        FROM public.api_keys AS k
        WHERE k.id = key_id;
    PERFORM set_config('consentry.api_key_lookup', previous, true);
END;
$$;
REVOKE ALL ON FUNCTION consentry_resolve_api_key(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_resolve_api_key(text) TO consentry_subprocessors_rw;

-- Recipients: who receives personal data from the tenant (GDPR Art. 19). `secret_sealed`
-- is the Standard Webhooks signing secret (32 random bytes) sealed under the master key
-- (context `recipient:<tenant>:<id>:webhook-secret`); after a rotation the previous one
-- keeps signing (and verifying acknowledgements) until `previous_secret_expires_at`.
-- `purposes` are consent purposes whose withdrawal concerns the recipient. `region` is an
-- ISO 3166-1 alpha-2 code; whether it lies outside the EEA is derived from it.
CREATE TABLE recipients (
    tenant_id                   uuid        NOT NULL,
    id                          uuid        PRIMARY KEY,
    name                        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    role                        text        NOT NULL CHECK (
        role IN ('payment', 'billing', 'affiliate', 'joint-marketing')
    ),
    region                      text        NOT NULL CHECK (region ~ '^[A-Z]{2}$'),
    webhook_url                 text        NOT NULL CHECK (webhook_url ~ '^https?://'),
    purposes                    text[]      NOT NULL DEFAULT '{}',
    data_categories             text[]      NOT NULL DEFAULT '{}',
    secret_sealed               bytea       NOT NULL,
    previous_secret_sealed      bytea,
    previous_secret_expires_at  timestamptz,
    secret_rotated_at           timestamptz,
    active                      boolean     NOT NULL DEFAULT true,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deactivated_at              timestamptz,
    UNIQUE (tenant_id, id)
);
-- One active recipient of a name per tenant (a deactivated one may be registered anew).
CREATE UNIQUE INDEX recipients_active_name ON recipients (tenant_id, lower(name)) WHERE active;
CREATE INDEX recipients_by_tenant ON recipients (tenant_id, created_at);
SELECT consentry_isolate_tenant('recipients');

-- A notice: one erasure request or consent withdrawal of one subject, and the recipients
-- selected for it (possibly none). `id` is derived from the triggering event's id, so a
-- redelivered event cannot make a second notice.
CREATE TABLE notices (
    tenant_id        uuid        NOT NULL,
    id               uuid        NOT NULL,
    source_event_id  text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('erasure', 'consent-withdrawn')),
    request_id       text        NOT NULL DEFAULT '',
    request_kind     text        CHECK (request_kind IN ('erasure', 'child-data-erasure')),
    subject_ref      text        NOT NULL CHECK (length(subject_ref) BETWEEN 1 AND 200),
    purposes         text[]      NOT NULL DEFAULT '{}',
    occurred_at      timestamptz NOT NULL,
    recipient_ids    uuid[]      NOT NULL,
    selected_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK ((kind = 'erasure') = (request_id <> ''))
);
CREATE INDEX notices_by_request ON notices (tenant_id, request_id) WHERE request_id <> '';
SELECT consentry_isolate_tenant('notices');

-- A delivery: one notice to one recipient. `payload` is the exact JSON body, the same on
-- every attempt; the Standard Webhooks message id is `msg_<id without dashes>`, the same on
-- every attempt, so a recipient can deduplicate. The sender claims rows whose
-- `next_attempt_at` has come (NULL: nothing more to do) and pushes it forward by a lease.
CREATE TABLE deliveries (
    tenant_id         uuid        NOT NULL,
    id                uuid        PRIMARY KEY,
    notice_id         uuid        NOT NULL,
    recipient_id      uuid        NOT NULL,
    payload           text        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending' CHECK (
        status IN ('pending', 'delivered', 'acknowledged', 'dead_lettered')
    ),
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz,
    deadline_at       timestamptz NOT NULL,
    first_attempt_at  timestamptz,
    last_attempt_at   timestamptz,
    last_error        text,
    delivered_at      timestamptz,
    acknowledged_at   timestamptz,
    acknowledged_via  text        CHECK (acknowledged_via IN ('response', 'callback')),
    dead_lettered_at  timestamptz,
    flagged_at        timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, notice_id) REFERENCES notices (tenant_id, id),
    FOREIGN KEY (tenant_id, recipient_id) REFERENCES recipients (tenant_id, id),
    CHECK ((status = 'acknowledged') = (acknowledged_at IS NOT NULL)),
    CHECK (status NOT IN ('acknowledged', 'dead_lettered') OR next_attempt_at IS NULL)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
CREATE INDEX deliveries_by_notice ON deliveries (tenant_id, notice_id);
CREATE INDEX deliveries_by_status ON deliveries (tenant_id, status, created_at, id);
SELECT consentry_isolate_tenant('deliveries');

-- Finding deliveries across tenants, each through one SECURITY DEFINER function that
-- returns ids only (like consentry_resolve_api_key: it sets a transaction-local setting
-- that one SELECT policy honours, then restores it, so it also works for a non-superuser
-- owner under FORCE).
CREATE POLICY delivery_lookup ON deliveries FOR SELECT
    USING (id::text = current_setting('consentry.delivery_lookup', true));
CREATE POLICY delivery_scan ON deliveries FOR SELECT
    USING (current_setting('consentry.delivery_scan', true) = 'on');

-- The tenant and recipient of one delivery (the acknowledgement callback has no API key).
CREATE FUNCTION consentry_find_delivery(delivery uuid)
RETURNS TABLE (tenant_id uuid, recipient_id uuid)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.delivery_lookup', true), '');
BEGIN
    PERFORM set_config('consentry.delivery_lookup', delivery::text, true);
    RETURN QUERY
        SELECT d.tenant_id, d.recipient_id FROM public.deliveries AS d WHERE d.id = delivery;
    PERFORM set_config('consentry.delivery_lookup', previous, true);
END;
$$;

-- Deliveries whose next attempt is due, oldest first (the sender then claims them tenant by
-- tenant with FOR UPDATE SKIP LOCKED).
CREATE FUNCTION consentry_due_deliveries(max_rows integer)
RETURNS TABLE (tenant_id uuid, id uuid)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.delivery_scan', true), '');
BEGIN
    PERFORM set_config('consentry.delivery_scan', 'on', true);
    RETURN QUERY
        SELECT d.tenant_id, d.id FROM public.deliveries AS d
        WHERE d.next_attempt_at <= now()
        ORDER BY d.next_attempt_at
        LIMIT max_rows;
    PERFORM set_config('consentry.delivery_scan', previous, true);
END;
$$;
REVOKE ALL ON FUNCTION consentry_find_delivery(uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION consentry_due_deliveries(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_find_delivery(uuid) TO consentry_subprocessors_rw;
GRANT EXECUTE ON FUNCTION consentry_due_deliveries(integer) TO consentry_subprocessors_rw;

-- Wake the senders when deliveries are created (NOTIFY is delivered at commit); they also
-- poll, so a lost notification only adds latency.
CREATE FUNCTION deliveries_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('subprocessor_deliveries', '');
    RETURN NULL;
END;
$$;
CREATE TRIGGER deliveries_notify
    AFTER INSERT ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_notify();

GRANT USAGE ON SCHEMA public TO consentry_subprocessors_rw;
GRANT SELECT, INSERT, UPDATE ON api_keys TO consentry_subprocessors_rw;
GRANT SELECT, INSERT, UPDATE ON recipients, notices, deliveries TO consentry_subprocessors_rw;
GRANT SELECT, INSERT, UPDATE, DELETE ON eventing_outbox TO consentry_subprocessors_rw;
GRANT SELECT, INSERT ON eventing_inbox TO consentry_subprocessors_rw;
