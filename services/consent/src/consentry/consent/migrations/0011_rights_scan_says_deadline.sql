-- The rights worker's scan (migration 0009) also says which requests need their deadline
-- looked at (`deadline`: due at or before `due_by` and not yet reported overdue for that
-- instant), so a request being fanned out far from its due date costs the worker no
-- deadline transaction: at 100 single-subject requests/s that was one transaction in eight
-- of the consent database's (bench/rights_erasure.py, docs/rights-requests.md).
DROP FUNCTION consentry_rights_open_requests(timestamptz);

CREATE FUNCTION consentry_rights_open_requests(due_by timestamptz)
RETURNS TABLE (tenant_id uuid, request_id uuid, fan_out boolean, deadline boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.rights_scanner', true), '');
BEGIN
    PERFORM set_config('consentry.rights_scanner', 'on', true);
    RETURN QUERY
        SELECT w.tenant_id, w.id, w.fan_out, w.deadline
        FROM (
            SELECT r.tenant_id, r.id, r.received_at,
                   (r.state = 'in-progress' AND r.fanned_out < r.subject_count) AS fan_out,
                   (r.due_at <= due_by AND NOT EXISTS (
                       SELECT 1 FROM public.rights_deadline_notices AS d
                       WHERE d.tenant_id = r.tenant_id AND d.request_id = r.id
                         AND d.status = 'overdue' AND d.due_at = r.due_at)) AS deadline
            FROM public.rights_requests AS r
            WHERE r.closed_at IS NULL
        ) AS w
        WHERE w.fan_out OR w.deadline
        ORDER BY w.received_at, w.tenant_id, w.id;
    PERFORM set_config('consentry.rights_scanner', previous, true);
END;
$$;
REVOKE ALL ON FUNCTION consentry_rights_open_requests(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_rights_open_requests(timestamptz) TO consentry_consent_rw;
