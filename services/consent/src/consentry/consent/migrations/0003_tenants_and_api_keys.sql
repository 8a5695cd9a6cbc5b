-- Tenants keep their subject key sealed; API keys per tenant with scopes, stored hashed.
--
-- The subject key (HMAC key of subject references) is stored sealed with AES-256-GCM under
-- the service's master key, bound to `tenant:<id>:subject-key` (consentry.consent.sealing).
-- The database never holds it in clear, and cannot seal it itself: the master key is not
-- in the database. Tenants created before this migration had clear keys; only development
-- databases have them, and this migration refuses to run on one (drop it and migrate again)
-- rather than drop keys that their subjects' references depend on.

-- The owner passes the tenant policies only when FORCE is off: look at every row.
ALTER TABLE tenants NO FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM tenants) THEN
        RAISE EXCEPTION 'consent migration 0003: tenants with subject keys in clear exist, '
                        'and the database cannot seal them'
            USING HINT = 'only development databases predate 0003: drop the consent database '
                         '(make clean) and migrate again';
    END IF;
END;
$$;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;

ALTER TABLE tenants DROP COLUMN subject_key;
-- version byte + 12-byte nonce + 32-byte key + 16-byte tag: a 32-byte clear key cannot pass.
ALTER TABLE tenants
    ADD COLUMN subject_key_sealed bytea NOT NULL CHECK (length(subject_key_sealed) = 61),
    ADD CONSTRAINT tenants_name_length CHECK (char_length(name) BETWEEN 1 AND 200);

-- API keys. The presented key is `csk_<id>_<secret>`; only SHA-256(secret) is stored.
CREATE TABLE api_keys (
    id              text        PRIMARY KEY CHECK (id ~ '^[a-z2-7]{16}$'),
    tenant_id       uuid        NOT NULL REFERENCES tenants (id),
    name            text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    scopes          text[]      NOT NULL CHECK (
        cardinality(scopes) BETWEEN 1 AND 5
        AND scopes <@ ARRAY['consent:read', 'consent:write', 'policy:admin', 'audit:read',
                            'admin']::text[]
    ),
    secret_hash     bytea       NOT NULL CHECK (length(secret_hash) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz,
    created_by_key  text        -- the key that created it ('dev': the dev key); NULL: the CLI
);
CREATE INDEX api_keys_by_tenant ON api_keys (tenant_id, created_at);
SELECT consentry_isolate_tenant('api_keys');

-- A key is resolved before its tenant is known. consentry_resolve_api_key() is the one way
-- to read a key across tenants: for the duration of its query it sets
-- `consentry.api_key_lookup` to the requested id, and this policy shows exactly that row;
-- then it puts the previous value back (an error aborts the (sub)transaction, which undoes
-- the setting anyway). A SET clause on the function would restore it by itself, but
-- PostgreSQL lets only superusers attach a custom setting to a function, and the owner need
-- not be one. This works for a non-superuser owner too, which FORCE subjects to the tenant
-- policy. Like the tenant GUC, the setting guards against mistakes in the application's
-- queries, not against someone who runs SQL as the app role.
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
GRANT EXECUTE ON FUNCTION consentry_resolve_api_key(text) TO consentry_consent_rw;

-- The application reads keys without their hashes (only the function above returns those),
-- creates keys, and revokes them; it never deletes one (a revoked key stays for the record).
GRANT SELECT (id, tenant_id, name, scopes, created_at, revoked_at, created_by_key),
      INSERT (id, tenant_id, name, scopes, secret_hash, created_by_key),
      UPDATE (revoked_at)
    ON api_keys TO consentry_consent_rw;
