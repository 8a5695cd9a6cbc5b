-- Proof details of each decision, the receipt that covered it, and the child flag.

-- A subject flagged as a child (an age signal under 13 was given): consent-based purposes are
-- refused for it, checks answer `child`, and the erasure issue's child-data request erases it.
ALTER TABLE subjects
    ADD COLUMN is_child boolean NOT NULL DEFAULT false,
    ADD COLUMN child_flagged_at timestamptz;

-- receipt_id: the signed receipt returned for the call that recorded the decision.
-- client_fingerprint: HMAC(tenant subject key, client IP and user agent), hex; never the IP.
-- gpc: the request carried a Global Privacy Control signal.
ALTER TABLE consent_ledger
    ADD COLUMN receipt_id uuid,
    ADD COLUMN client_fingerprint text CHECK (client_fingerprint ~ '^[0-9a-f]{64}$'),
    ADD COLUMN gpc boolean NOT NULL DEFAULT false;

-- Checks in one round trip: scope to `tenant` for this query (as tenant_transaction would;
-- row-level security still applies, the function runs with the caller's rights), look up
-- each (subject_ref, purpose) pair in the current state, and put the previous tenant
-- setting back. One row per pair, in order; NULLs for an unknown subject or decision.
CREATE FUNCTION consentry_check_consents(tenant uuid, refs text[], purposes text[])
RETURNS TABLE (n bigint, status text, needs_reconsent boolean, is_child boolean)
LANGUAGE plpgsql
SET search_path = pg_catalog, public
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.tenant_id', true), '');
BEGIN
    PERFORM set_config('consentry.tenant_id', tenant::text, true);
    RETURN QUERY
        SELECT q.n, c.status, c.needs_reconsent, s.is_child
        FROM unnest(refs, purposes) WITH ORDINALITY AS q(subject_ref, purpose, n)
        LEFT JOIN subjects s ON s.tenant_id = tenant AND s.subject_ref = q.subject_ref
        LEFT JOIN consents c
               ON c.tenant_id = tenant AND c.subject_ref = q.subject_ref
              AND c.purpose = q.purpose
        ORDER BY q.n;
    PERFORM set_config('consentry.tenant_id', previous, true);
END;
$$;
REVOKE ALL ON FUNCTION consentry_check_consents(uuid, text[], text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_check_consents(uuid, text[], text[])
    TO consentry_consent_rw;
