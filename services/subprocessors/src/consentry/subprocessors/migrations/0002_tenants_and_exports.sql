-- Tenants from the tenant directory; an index for access exports.
--
-- Tenants as announced by the consent service (topic consentry.tenant.v1, ADR 0008), written
-- by the `directory` worker next to `api_keys`. The subprocessors service derives no subject
-- references (it receives them in events), so it keeps no subject key and holds no directory
-- key: only that the tenant exists, its (organisation's) name and when it was provisioned.
-- The API answers 503 `tenant-not-provisioned` for a tenant not here yet, so no registry
-- state is created for a tenant the consent service has not announced.
CREATE TABLE tenants (
    id              uuid        PRIMARY KEY,
    name            text        NOT NULL,
    provisioned_at  timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
SELECT consentry_isolate_tenant('tenants', 'id');

GRANT SELECT, INSERT, UPDATE ON tenants TO consentry_subprocessors_rw;

-- A subject's notices, for its part of an access export (the notifier answers
-- AccessRequested per subject: without it, one scan of the tenant's notices per subject).
CREATE INDEX notices_by_subject ON notices (tenant_id, subject_ref);
