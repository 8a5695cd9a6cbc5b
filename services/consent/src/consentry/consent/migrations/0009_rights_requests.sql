-- Rights requests (GDPR Art. 12, 15-17, 19; docs/rights-requests.md): the requests, their
-- deadline facts, the subjects they cover, the fan-out's progress, the answers of every
-- internal service and external recipient, and the deadline events already published.
-- Every table is tenant-owned and isolated by row-level security like the rest of the
-- database (migration 0002). Nothing here holds personal data in clear: subjects appear only
-- as pseudonymous references; the requester's free-text note is sealed under the master key.

CREATE TABLE rights_requests (
    tenant_id         uuid        NOT NULL REFERENCES tenants (id),
    id                uuid        NOT NULL,
    kind              text        NOT NULL CHECK (kind IN (
                          'erasure', 'access', 'correction', 'child-data-erasure')),
    requester         text        NOT NULL CHECK (requester IN ('subject', 'tenant')),
    state             text        NOT NULL CHECK (state IN (
                          'received', 'identity-verified', 'in-progress', 'completed',
                          'rejected')),
    subject_count     integer     NOT NULL CHECK (subject_count BETWEEN 1 AND 100000),
    -- AES-256-GCM under the master key, context tenant:<id>:rights-request:<id>:note.
    note_sealed       bytea,
    -- Why the request was rejected (published on RequestClosed: no personal data).
    reason            text        CHECK (char_length(reason) BETWEEN 1 AND 1000),
    -- Which internal services must report, and whether recipients are awaited: fixed at
    -- receipt (settings CONSENTRY_ERASURE_SERVICES / CONSENTRY_ERASURE_AWAIT_RECIPIENTS), so
    -- a configuration change does not move the goalposts of requests already running.
    expected_services text[]      NOT NULL,
    await_recipients  boolean     NOT NULL,
    -- The deadline's facts (consent/rights/deadlines.py); timezone and holiday_country are
    -- the tenant's at receipt. pauses: [{"paused_at": ..., "resumed_at": ... | null}, ...].
    received_at       timestamptz NOT NULL,
    timezone          text        NOT NULL,
    holiday_country   text        NOT NULL,
    roll_forward      boolean     NOT NULL DEFAULT true,
    pauses            jsonb       NOT NULL DEFAULT '[]',
    extension_months  integer     CHECK (extension_months BETWEEN 1 AND 2),
    extension_reason  text        CHECK (char_length(extension_reason) BETWEEN 1 AND 1000),
    extension_notice_sent_at timestamptz,
    extended_at       timestamptz,
    closed_at         timestamptz,
    -- Derived from the facts above by Deadline.restore on every change (for SQL listing).
    due_at            timestamptz NOT NULL,
    verified_at       timestamptz,  -- identity verified (implicitly at receipt for a tenant)
    started_at        timestamptz,  -- in progress since
    -- Fan-out: subjects 1..fanned_out have had their events queued (and consent's own data
    -- erased); subjects_done have every answer the request waits for.
    fanned_out        integer     NOT NULL DEFAULT 0,
    fanned_out_at     timestamptz,
    subjects_done     integer     NOT NULL DEFAULT 0,
    subjects_with_recipients integer NOT NULL DEFAULT 0,
    -- Access requests: the X25519 key parts are sealed to; the private key sealed under
    -- the master key (context tenant:<id>:rights-request:<id>:export-key).
    export_public_key bytea       CHECK (length(export_public_key) = 32),
    export_key_sealed bytea,
    certificate       text,         -- the signed completion certificate (compact JWS)
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CHECK (jsonb_typeof(pauses) = 'array'),
    CHECK ((state IN ('completed', 'rejected')) = (closed_at IS NOT NULL)),
    CHECK (state <> 'rejected' OR reason IS NOT NULL),
    CHECK ((extension_months IS NULL) = (extended_at IS NULL)),
    CHECK (fanned_out BETWEEN 0 AND subject_count),
    CHECK (subjects_done BETWEEN 0 AND subject_count),
    CHECK (subjects_with_recipients BETWEEN 0 AND subject_count)
);
-- Listing by deadline (GET /v1/rights-requests) and the worker's scan of open requests.
CREATE INDEX rights_requests_by_due ON rights_requests (tenant_id, due_at, id);
CREATE INDEX rights_requests_open ON rights_requests (due_at) WHERE closed_at IS NULL;

-- The subjects a request covers, numbered 1..subject_count in the order given (the fan-out
-- goes in that order, in chunks, and resumes after the last chunk it committed).
CREATE TABLE rights_request_subjects (
    tenant_id              uuid        NOT NULL,
    request_id             uuid        NOT NULL,
    n                      integer     NOT NULL CHECK (n >= 1),
    subject_ref            text        NOT NULL,
    recipients_selected_at timestamptz,  -- RecipientsSelected arrived (possibly none)
    done_at                timestamptz,  -- every expected answer arrived
    PRIMARY KEY (tenant_id, request_id, n),
    UNIQUE (tenant_id, request_id, subject_ref),
    FOREIGN KEY (tenant_id, request_id) REFERENCES rights_requests (tenant_id, id)
);

-- A subject's requests (the consent service's part of an access export lists them).
CREATE INDEX rights_request_subjects_by_subject
    ON rights_request_subjects (tenant_id, subject_ref);

-- One internal service's answer for one subject of a request: ErasureCompleted (what it
-- erased), or AccessPartReady (its part of the export, sealed to the request's export key:
-- only the holder of the request's private key can open it).
CREATE TABLE rights_subject_services (
    tenant_id    uuid        NOT NULL,
    request_id   uuid        NOT NULL,
    subject_ref  text        NOT NULL,
    service      text        NOT NULL CHECK (char_length(service) BETWEEN 1 AND 100),
    completed_at timestamptz NOT NULL,
    erased       text[]      NOT NULL DEFAULT '{}',
    sealed_part  bytea,
    PRIMARY KEY (tenant_id, request_id, subject_ref, service),
    FOREIGN KEY (tenant_id, request_id, subject_ref)
        REFERENCES rights_request_subjects (tenant_id, request_id, subject_ref)
);

-- One recipient's notice about one subject of a request: selected (pending), then
-- acknowledged or dead-lettered (escalated). The first resolution is kept.
CREATE TABLE rights_subject_recipients (
    tenant_id     uuid        NOT NULL,
    request_id    uuid        NOT NULL,
    subject_ref   text        NOT NULL,
    recipient_id  text        NOT NULL CHECK (char_length(recipient_id) BETWEEN 1 AND 200),
    state         text        NOT NULL CHECK (state IN (
                      'pending', 'acknowledged', 'dead-lettered')),
    selected_at   timestamptz,
    resolved_at   timestamptz,
    webhook_id    text,
    first_sent_at timestamptz,
    attempts      integer,
    last_error    text,
    PRIMARY KEY (tenant_id, request_id, subject_ref, recipient_id),
    FOREIGN KEY (tenant_id, request_id, subject_ref)
        REFERENCES rights_request_subjects (tenant_id, request_id, subject_ref),
    CHECK ((state = 'pending') = (resolved_at IS NULL))
);

-- Per request and service / recipient: counters kept by the tracker in batch, so progress
-- and the certificate never scan 100,000 subjects.
CREATE TABLE rights_request_services (
    tenant_id          uuid        NOT NULL,
    request_id         uuid        NOT NULL,
    service            text        NOT NULL,
    subjects           integer     NOT NULL DEFAULT 0,
    erased             text[]      NOT NULL DEFAULT '{}',
    first_completed_at timestamptz,
    last_completed_at  timestamptz,
    PRIMARY KEY (tenant_id, request_id, service),
    FOREIGN KEY (tenant_id, request_id) REFERENCES rights_requests (tenant_id, id)
);

CREATE TABLE rights_request_recipients (
    tenant_id             uuid        NOT NULL,
    request_id            uuid        NOT NULL,
    recipient_id          text        NOT NULL,
    selected              integer     NOT NULL DEFAULT 0,
    acknowledged          integer     NOT NULL DEFAULT 0,
    dead_lettered         integer     NOT NULL DEFAULT 0,
    first_acknowledged_at timestamptz,
    last_acknowledged_at  timestamptz,
    last_dead_lettered_at timestamptz,
    PRIMARY KEY (tenant_id, request_id, recipient_id),
    FOREIGN KEY (tenant_id, request_id) REFERENCES rights_requests (tenant_id, id)
);

-- RequestDeadline events published: once per request, status and due instant (an
-- extension moves the due instant, and the new deadline is warned about again).
CREATE TABLE rights_deadline_notices (
    tenant_id    uuid        NOT NULL,
    request_id   uuid        NOT NULL,
    status       text        NOT NULL CHECK (status IN ('due_soon', 'overdue')),
    due_at       timestamptz NOT NULL,
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id, status, due_at),
    FOREIGN KEY (tenant_id, request_id) REFERENCES rights_requests (tenant_id, id)
);

SELECT consentry_isolate_tenant('rights_requests');
SELECT consentry_isolate_tenant('rights_request_subjects');
SELECT consentry_isolate_tenant('rights_subject_services');
SELECT consentry_isolate_tenant('rights_subject_recipients');
SELECT consentry_isolate_tenant('rights_request_services');
SELECT consentry_isolate_tenant('rights_request_recipients');
SELECT consentry_isolate_tenant('rights_deadline_notices');

-- Requests and their bookkeeping are never deleted: they are the record that a request was
-- answered, and when.
GRANT SELECT, INSERT, UPDATE ON rights_requests, rights_request_subjects,
    rights_subject_services, rights_subject_recipients, rights_request_services,
    rights_request_recipients TO consentry_consent_rw;
GRANT SELECT, INSERT ON rights_deadline_notices TO consentry_consent_rw;

-- The `rights` worker finds open requests of every tenant, which row-level security hides
-- from the application (and, under FORCE, from a non-superuser owner). Built like
-- consentry_due_policy_versions() of migration 0004: for the duration of its query it sets
-- `consentry.rights_scanner` to 'on', which these policies honour, then puts the previous
-- value back. It returns (tenant, request) pairs and what to do with each, nothing else;
-- the work itself happens in tenant-scoped transactions.
CREATE POLICY rights_scanner ON rights_requests FOR SELECT
    USING (closed_at IS NULL AND current_setting('consentry.rights_scanner', true) = 'on');
CREATE POLICY rights_scanner ON rights_deadline_notices FOR SELECT
    USING (current_setting('consentry.rights_scanner', true) = 'on');

-- Open requests that have subjects left to fan out, or whose due instant is at or before
-- `due_by` (the caller's horizon for "due soon") and that were not yet reported overdue for
-- that instant.
CREATE FUNCTION consentry_rights_open_requests(due_by timestamptz)
RETURNS TABLE (tenant_id uuid, request_id uuid, fan_out boolean)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.rights_scanner', true), '');
BEGIN
    PERFORM set_config('consentry.rights_scanner', 'on', true);
    RETURN QUERY
        SELECT r.tenant_id, r.id, (r.state = 'in-progress' AND r.fanned_out < r.subject_count)
        FROM public.rights_requests AS r
        WHERE r.closed_at IS NULL
          AND ((r.state = 'in-progress' AND r.fanned_out < r.subject_count)
               OR (r.due_at <= due_by AND NOT EXISTS (
                   SELECT 1 FROM public.rights_deadline_notices AS d
                   WHERE d.tenant_id = r.tenant_id AND d.request_id = r.id
                     AND d.status = 'overdue' AND d.due_at = r.due_at)))
        ORDER BY r.received_at, r.tenant_id, r.id;
    PERFORM set_config('consentry.rights_scanner', previous, true);
END;
$$;
REVOKE ALL ON FUNCTION consentry_rights_open_requests(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_rights_open_requests(timestamptz) TO consentry_consent_rw;

-- Erasure of the consent service's own data for some subjects of the calling tenant: the
-- current consent state, the append-only ledger's rows and the subject rows. This is the
-- ONLY delete path of the ledger: the application role still has no DELETE on it (nor on
-- `consents` and `subjects`). The ledger holds pseudonymous references only, and the proof
-- of consent outlives it in the audit log (docs/rights-requests.md, "Consent's own data").
--
-- The transaction must already be scoped to `tenant` (tenant_transaction): the function
-- refuses anything else, so a mistake cannot erase another tenant's subjects. Subject rows
-- are locked in subject order first, as the consent writer locks them: no deadlock, and a
-- capture in flight for the subject commits before or waits until after the erasure.
-- Returns, per reference asked for, how many rows of each kind were deleted.
CREATE FUNCTION consentry_erase_subjects(tenant uuid, refs text[])
RETURNS TABLE (subject_ref text, subjects integer, consents integer, ledger integer)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    gone_consents text[];
    gone_ledger text[];
    gone_subjects text[];
BEGIN
    IF current_setting('consentry.tenant_id', true) IS DISTINCT FROM tenant::text THEN
        RAISE EXCEPTION 'consentry_erase_subjects: the transaction is not scoped to tenant %',
            tenant USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM 1 FROM public.subjects AS s
    WHERE s.tenant_id = tenant AND s.subject_ref = ANY(refs)
    ORDER BY s.subject_ref
    FOR UPDATE;
    WITH gone AS (
        DELETE FROM public.consents AS c
        WHERE c.tenant_id = tenant AND c.subject_ref = ANY(refs)
        RETURNING c.subject_ref
    ) SELECT coalesce(array_agg(gone.subject_ref), '{}') INTO gone_consents FROM gone;
    WITH gone AS (
        DELETE FROM public.consent_ledger AS l
        WHERE l.tenant_id = tenant AND l.subject_ref = ANY(refs)
        RETURNING l.subject_ref
    ) SELECT coalesce(array_agg(gone.subject_ref), '{}') INTO gone_ledger FROM gone;
    WITH gone AS (
        DELETE FROM public.subjects AS s
        WHERE s.tenant_id = tenant AND s.subject_ref = ANY(refs)
        RETURNING s.subject_ref
    ) SELECT coalesce(array_agg(gone.subject_ref), '{}') INTO gone_subjects FROM gone;
    RETURN QUERY
        SELECT q.ref,
               coalesce(s.n, 0)::integer, coalesce(c.n, 0)::integer, coalesce(l.n, 0)::integer
        FROM unnest(refs) AS q(ref)
        LEFT JOIN (SELECT x, count(*) AS n FROM unnest(gone_subjects) AS x GROUP BY x) AS s
               ON s.x = q.ref
        LEFT JOIN (SELECT x, count(*) AS n FROM unnest(gone_consents) AS x GROUP BY x) AS c
               ON c.x = q.ref
        LEFT JOIN (SELECT x, count(*) AS n FROM unnest(gone_ledger) AS x GROUP BY x) AS l
               ON l.x = q.ref;
END;
$$;
REVOKE ALL ON FUNCTION consentry_erase_subjects(uuid, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_erase_subjects(uuid, text[]) TO consentry_consent_rw;
