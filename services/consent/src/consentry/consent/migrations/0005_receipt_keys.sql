-- Per-tenant Ed25519 keys that sign consent receipts (docs/receipts.md).
--
-- A tenant has at most one active key (retired_at IS NULL); rotation retires it and adds a
-- new one. Retired keys are kept for ever and stay in the tenant's JWKS, so receipts signed
-- with them keep verifying. The private key is sealed under the service's master key
-- (consentry.consent.sealing, context `tenant:<id>:receipt-key:<kid>`); `public_jwk` is the
-- RFC 8037 JWK with `kid` = its RFC 7638 thumbprint.

CREATE TABLE receipt_keys (
    tenant_id          uuid        NOT NULL REFERENCES tenants (id),
    kid                text        NOT NULL,
    public_jwk         jsonb       NOT NULL,
    private_key_sealed bytea       NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    retired_at         timestamptz,
    PRIMARY KEY (tenant_id, kid),
    CHECK (public_jwk ->> 'kid' = kid),
    CHECK (public_jwk ->> 'kty' = 'OKP' AND public_jwk ->> 'crv' = 'Ed25519'),
    CHECK (NOT public_jwk ? 'd'),  -- never a private JWK in the public column
    CHECK (retired_at IS NULL OR retired_at >= created_at)
);

-- One active key per tenant.
CREATE UNIQUE INDEX receipt_keys_one_active ON receipt_keys (tenant_id) WHERE retired_at IS NULL;

SELECT consentry_isolate_tenant('receipt_keys');

-- Keys are never deleted or changed, only retired.
GRANT SELECT, INSERT ON receipt_keys TO consentry_consent_rw;
GRANT UPDATE (retired_at) ON receipt_keys TO consentry_consent_rw;

-- The public JWKs of one tenant, oldest first, for the public JWKS endpoint, which has no
-- tenant-scoped API key: NULL when the tenant does not exist, an empty array when it has no
-- key yet. It runs as its owner and scopes itself to `tenant` while it reads, so it works
-- whether or not the owner bypasses row-level security, and it returns only the public
-- column. It puts the caller's consentry.tenant_id back before returning (on an error the
-- transaction or savepoint rolls the setting back anyway). Not a `SET consentry.tenant_id`
-- clause: PostgreSQL refuses a placeholder setting there to an owner that is not superuser.
CREATE FUNCTION consentry_receipt_jwks(tenant uuid) RETURNS jsonb
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
    caller_scope text := current_setting('consentry.tenant_id', true);
    jwks jsonb;
BEGIN
    PERFORM set_config('consentry.tenant_id', tenant::text, true);
    IF EXISTS (SELECT 1 FROM tenants WHERE id = tenant) THEN
        SELECT coalesce(jsonb_agg(public_jwk ORDER BY created_at, kid), '[]'::jsonb)
        INTO jwks
        FROM receipt_keys WHERE tenant_id = tenant;
    END IF;
    PERFORM set_config('consentry.tenant_id', coalesce(caller_scope, ''), true);
    RETURN jwks;
END;
$$;

REVOKE ALL ON FUNCTION consentry_receipt_jwks(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_receipt_jwks(uuid) TO consentry_consent_rw;
