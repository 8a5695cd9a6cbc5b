-- The preferences database: the tenant directory replica, communication topics, subjects
-- (per-subject data keys, the encrypted contact), preferences, and the service's copy of
-- consent state learnt from the consent topic. Tenant isolation by row-level security, as in
-- the consent service (docs/adr/0007-tenant-isolation-rls.md).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'consentry_preferences_rw') THEN
        CREATE ROLE consentry_preferences_rw NOLOGIN;
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

-- Tenants as announced by the consent service (topic consentry.tenant.v1, ADR 0008). The
-- subject key arrives wrapped under the directory key and is kept sealed under this
-- service's master key (context `tenant:<id>:subject-key`). `kek_sealed` is this service's
-- own per-tenant key-encryption key (seals the per-subject data keys) and `link_key_sealed`
-- the HMAC key of the tenant's unsubscribe and preference-center tokens; both are made here
-- when the tenant first arrives, sealed under the master key.
CREATE TABLE tenants (
    id                  uuid        PRIMARY KEY,
    name                text        NOT NULL,
    subject_key_sealed  bytea       NOT NULL CHECK (length(subject_key_sealed) = 61),
    kek_sealed          bytea       NOT NULL CHECK (length(kek_sealed) = 61),
    link_key_sealed     bytea       NOT NULL CHECK (length(link_key_sealed) = 61),
    provisioned_at      timestamptz NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);
SELECT consentry_isolate_tenant('tenants', 'id');

-- API keys as announced by the consent service: only SHA-256 of the secret.
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
GRANT EXECUTE ON FUNCTION consentry_resolve_api_key(text) TO consentry_preferences_rw;

-- Communication topics: marketing (may be left) or transactional (may not), with channels
-- and display texts per language ({"en": "...", "sv": "..."}).
CREATE TABLE topics (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    name         text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    category     text        NOT NULL CHECK (category IN ('marketing', 'transactional')),
    channels     text[]      NOT NULL CHECK (
        cardinality(channels) BETWEEN 1 AND 3 AND channels <@ ARRAY['email', 'sms', 'push']
    ),
    labels       jsonb       NOT NULL DEFAULT '{}',
    descriptions jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name)
);
SELECT consentry_isolate_tenant('topics');

-- Subjects by pseudonymous reference. `version` counts preference changes (the per-subject
-- version of the preferences events). `data_key_sealed` is the subject's data key under the
-- tenant's KEK; the contact (an e-mail address) is AES-256-GCM under that data key, so
-- destroying the data key (erasure) makes every copy of the contact unreadable.
CREATE TABLE subjects (
    tenant_id                       uuid        NOT NULL REFERENCES tenants (id),
    subject_ref                     text        NOT NULL CHECK (subject_ref ~ '^[0-9a-f]{64}$'),
    version                         bigint      NOT NULL DEFAULT 0,
    all_marketing_unsubscribed_at   timestamptz,
    data_key_sealed                 bytea,
    contact_email_sealed            bytea,
    locale                          text        CHECK (locale IN ('en', 'sv')),
    created_at                      timestamptz NOT NULL DEFAULT now(),
    updated_at                      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_ref),
    CHECK (contact_email_sealed IS NULL OR data_key_sealed IS NOT NULL)
);
SELECT consentry_isolate_tenant('subjects');

-- Current preference per subject, topic and channel (absent: never chosen).
CREATE TABLE preferences (
    tenant_id    uuid        NOT NULL,
    subject_ref  text        NOT NULL,
    topic        text        NOT NULL,
    channel      text        NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    subscribed   boolean     NOT NULL,
    method       text        NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_ref, topic, channel),
    FOREIGN KEY (tenant_id, subject_ref) REFERENCES subjects (tenant_id, subject_ref)
        ON DELETE CASCADE,
    FOREIGN KEY (tenant_id, topic) REFERENCES topics (tenant_id, name)
);
SELECT consentry_isolate_tenant('preferences');

-- This service's copy of consent state, kept by the consent follower from the consent
-- topic (never read from the consent database). `subject_version` is the consent service's
-- per-subject version: an older event never overwrites a newer one.
CREATE TABLE consent_copy (
    tenant_id        uuid        NOT NULL,
    subject_ref      text        NOT NULL,
    purpose          text        NOT NULL,
    given            boolean     NOT NULL,
    subject_version  bigint      NOT NULL,
    policy_version   text        NOT NULL,
    decided_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref, purpose)
);
SELECT consentry_isolate_tenant('consent_copy');

-- The tenant's policy version in effect, from the consent topic's policy events (the
-- preference center records consent changes under it, through the intake topic).
CREATE TABLE tenant_policy (
    tenant_id      uuid        PRIMARY KEY,
    version        text        NOT NULL,
    effective_at   timestamptz NOT NULL
);
SELECT consentry_isolate_tenant('tenant_policy');

GRANT USAGE ON SCHEMA public TO consentry_preferences_rw;
GRANT SELECT, INSERT, UPDATE ON tenants, api_keys, tenant_policy TO consentry_preferences_rw;
GRANT SELECT, INSERT, UPDATE, DELETE ON topics, subjects, preferences, consent_copy
    TO consentry_preferences_rw;
GRANT SELECT, INSERT, UPDATE, DELETE ON eventing_outbox TO consentry_preferences_rw;
GRANT SELECT, INSERT ON eventing_inbox TO consentry_preferences_rw;
