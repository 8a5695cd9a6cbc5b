-- The tracker's counters of a request move to a row of their own. They were columns of
-- rights_requests, which the `rights` worker locks (FOR NO KEY UPDATE) for each fan-out
-- chunk of a bulk request: every tracker batch then waited for the chunk in flight to
-- commit, and the next chunk for the tracker's batch (bench.rights_erasure (b), 100,000
-- subjects: the tracker finished 35-47 s after the last webhook). A request's row is now
-- changed by its own life cycle only; the tracker adds to this one.
CREATE TABLE rights_request_progress (
    tenant_id                uuid        NOT NULL,
    request_id               uuid        NOT NULL,
    -- subjects that have every answer the request waits for
    subjects_done            integer     NOT NULL DEFAULT 0 CHECK (subjects_done >= 0),
    -- subjects whose recipients the subprocessors service selected (possibly none)
    subjects_with_recipients integer     NOT NULL DEFAULT 0
                                         CHECK (subjects_with_recipients >= 0),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, request_id),
    FOREIGN KEY (tenant_id, request_id) REFERENCES rights_requests (tenant_id, id)
);

INSERT INTO rights_request_progress (tenant_id, request_id, subjects_done,
                                     subjects_with_recipients, updated_at)
SELECT tenant_id, id, subjects_done, subjects_with_recipients, updated_at
FROM rights_requests
WHERE subjects_done > 0 OR subjects_with_recipients > 0;

ALTER TABLE rights_requests DROP COLUMN subjects_done, DROP COLUMN subjects_with_recipients;

SELECT consentry_isolate_tenant('rights_request_progress');
GRANT SELECT, INSERT, UPDATE ON rights_request_progress TO consentry_consent_rw;
