-- The tenant directory (docs/adr/0008-tenant-directory.md): `publish-directory` announces
-- every tenant again, and must find them across tenants, which row-level security hides from
-- the application and, under FORCE, from a non-superuser owner too.
-- consentry_directory_tenants() is the one way to list them, built like
-- consentry_resolve_api_key() of migration 0003: for the duration of its query it sets
-- `consentry.directory_listing` to 'on', which this policy honours; then it puts the previous
-- value back. It returns tenant ids and nothing else; everything further happens per tenant
-- in a tenant-scoped transaction.
CREATE POLICY directory_listing ON tenants FOR SELECT
    USING (current_setting('consentry.directory_listing', true) = 'on');

CREATE FUNCTION consentry_directory_tenants()
RETURNS SETOF uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.directory_listing', true), '');
BEGIN
    PERFORM set_config('consentry.directory_listing', 'on', true);
    RETURN QUERY SELECT t.id FROM public.tenants AS t ORDER BY t.created_at, t.id;
    PERFORM set_config('consentry.directory_listing', previous, true);
END;
$$;
REVOKE ALL ON FUNCTION consentry_directory_tenants() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_directory_tenants() TO consentry_consent_rw;
