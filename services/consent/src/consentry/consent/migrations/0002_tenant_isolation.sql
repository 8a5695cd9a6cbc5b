-- Tenant isolation backed by PostgreSQL row-level security, and the application's group role.
--
-- Every query of the application runs with the GUC `consentry.tenant_id` set to the calling
-- tenant for the transaction (`consentry.consent.db.tenant_transaction`). Tenant-owned tables
-- carry `tenant_id` and a policy that shows and accepts only rows of that tenant; with the
-- GUC unset no row is visible. FORCE applies the policies to the table owner too; only
-- superusers and BYPASSRLS roles pass them, and the application uses neither.
--
-- `consentry_consent_rw` is the group role (NOLOGIN) of the consent processes: the dev stack
-- makes its login role `consentry_consent_app` a member; in production the operator does.
-- Later migrations call consentry_isolate_tenant('<table>') for every tenant-owned table.

-- Roles are cluster-wide: another database of the cluster may have created it already (and
-- an owner without CREATEROLE can then still migrate).
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'consentry_consent_rw') THEN
        CREATE ROLE consentry_consent_rw NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
END;
$$;

-- The calling tenant, or NULL when none is set (then tenant policies show nothing).
CREATE FUNCTION consentry_tenant() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT NULLIF(current_setting('consentry.tenant_id', true), '')::uuid
$$;

-- Enable and force row-level security on `tbl` with the tenant policy on `col`.
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

SELECT consentry_isolate_tenant('tenants', 'id');
SELECT consentry_isolate_tenant('subjects');
SELECT consentry_isolate_tenant('consent_ledger');
SELECT consentry_isolate_tenant('consents');

GRANT USAGE ON SCHEMA public TO consentry_consent_rw;
GRANT SELECT, INSERT, UPDATE ON tenants, subjects, consents TO consentry_consent_rw;
GRANT SELECT, INSERT ON consent_ledger TO consentry_consent_rw;  -- the ledger is append-only
GRANT SELECT, INSERT, UPDATE, DELETE ON eventing_outbox TO consentry_consent_rw;  -- relay
GRANT SELECT, INSERT ON eventing_inbox TO consentry_consent_rw;
