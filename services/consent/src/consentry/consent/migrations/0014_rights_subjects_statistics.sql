-- A bulk request adds up to 100,000 rows to rights_request_subjects in one commit, and its
-- answers start arriving within a second. Autovacuum analyzes a table at its next visit to
-- the database (autovacuum_naptime, a minute by default) at best; until then PostgreSQL
-- plans the rights tracker's lookups, and the foreign-key checks of every answer it records,
-- against the statistics of a table that was empty or a tenth of the size. Measured in
-- bench.rights_erasure (b), on a stack started fresh: every lookup of one subject scanned
-- all the request's subjects through the primary key's (tenant_id, request_id) prefix
-- (0.3 ms per foreign-key check at 20,000 subjects, growing with the request), and the
-- tracker fell minutes behind in the first two minutes.
--
-- consentry_rights_subjects_added(added) is called by the `rights` worker before the first
-- chunk of a request with many subjects: when the request grew the table past autovacuum's
-- own default analyze threshold (50 rows + 10 % of the rows it had when last analyzed), it
-- analyzes the table now (a sample of at most 30,000 rows at the default statistics target:
-- tens of milliseconds) instead of at autovacuum's next visit. True if it did.
-- SECURITY DEFINER: only the table's owner may analyze it.
CREATE FUNCTION consentry_rights_subjects_added(added integer)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    known real;
BEGIN
    SELECT reltuples INTO known FROM pg_class
    WHERE oid = 'public.rights_request_subjects'::regclass;
    -- reltuples is -1 for a table never analyzed (PostgreSQL 14 and later)
    IF known IS NULL OR known < 0 OR added > 50 + 0.1 * known THEN
        ANALYZE public.rights_request_subjects;
        RETURN true;
    END IF;
    RETURN false;
END;
$$;

REVOKE ALL ON FUNCTION consentry_rights_subjects_added(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_rights_subjects_added(integer) TO consentry_consent_rw;
