-- Purposes, policy (notice) versions and re-consent (services/consent/README.md, "Purposes"
-- and "Policy versions and re-consent").

-- The tenant's calendar for the 30-working-day notice rule and for the instant a version takes
-- effect (the start of its effective day in this time zone). Validated by the application
-- (the `holidays` library's country codes, IANA zone names). IF NOT EXISTS: the tenants
-- migration may add them too.
ALTER TABLE tenants
    ADD COLUMN IF NOT EXISTS holiday_country text NOT NULL DEFAULT 'SE'
        CHECK (holiday_country ~ '^[A-Z]{2}$'),
    ADD COLUMN IF NOT EXISTS timezone text NOT NULL DEFAULT 'Europe/Stockholm';

-- A tenant's catalogue of purposes. `requires_consent` follows from the legal basis (GDPR
-- Art. 6(1)); an always-on purpose cannot rest on consent, which must stay withdrawable
-- (Art. 7(3)).
CREATE TABLE purposes (
    tenant_id        uuid        NOT NULL REFERENCES tenants (id),
    name             text        NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    title            text        NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    description      text        NOT NULL DEFAULT '' CHECK (length(description) <= 2000),
    legal_basis      text        NOT NULL CHECK (legal_basis IN (
                         'consent', 'contract', 'legal-obligation', 'vital-interest',
                         'public-task', 'legitimate-interest')),
    requires_consent boolean     NOT NULL GENERATED ALWAYS AS (legal_basis = 'consent') STORED,
    always_on        boolean     NOT NULL DEFAULT false,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, name),
    CHECK (NOT (always_on AND legal_basis = 'consent')),
    -- `required` (strictly necessary) is always on, whatever an update asks.
    CHECK (name <> 'required' OR always_on)
);

-- The default catalogue, the one definition of it: the four cookie categories of the policy
-- and the purposes it names. `required` rests on legitimate interest (Art. 6(1)(f)): strictly
-- necessary storage needs no consent (ePrivacy Art. 5(3)) and must work for every visitor,
-- including those who have no contract with the tenant. Idempotent: an existing purpose keeps
-- whatever the tenant made of it.
CREATE FUNCTION consentry_seed_default_purposes(tenant uuid) RETURNS void
LANGUAGE sql VOLATILE AS $$
    INSERT INTO purposes (tenant_id, name, title, description, legal_basis, always_on)
    SELECT tenant, d.name, d.title, d.description, d.legal_basis, d.always_on
    FROM (VALUES
        ('required', 'Strictly necessary',
         'Storage and processing without which the service cannot work (sign-in, security, '
         'load balancing). Always on; cannot be withdrawn.', 'legitimate-interest', true),
        ('performance', 'Performance',
         'Measuring how the service is used to improve it (analytics).', 'consent', false),
        ('functionality', 'Functionality',
         'Remembering choices such as language or region for a richer experience.',
         'consent', false),
        ('targeting', 'Targeting and advertising',
         'Showing relevant advertising and measuring campaigns, also on other sites.',
         'consent', false),
        ('joint-marketing', 'Joint marketing',
         'Sharing data with joint-marketing partners for their and our offers.', 'consent', false),
        ('transfer-outside-eea', 'Transfer outside the EEA',
         'Transferring personal data to recipients outside the European Economic Area.',
         'consent', false),
        ('marketing-email', 'Marketing e-mail',
         'Sending newsletters and offers by e-mail (transactional mail is not marketing).',
         'consent', false)
    ) AS d (name, title, description, legal_basis, always_on)
    ON CONFLICT (tenant_id, name) DO NOTHING
$$;

-- Seed the tenants that exist already. `tenants` is under FORCE row-level security, which
-- hides every row from a non-superuser owner without the tenant setting; lifting FORCE for
-- the owner inside this migration's transaction is invisible to everyone else.
ALTER TABLE tenants NO FORCE ROW LEVEL SECURITY;
SELECT consentry_seed_default_purposes(id) FROM tenants;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;

-- A published policy (notice) version. `changed_purposes` is fixed at publication: the
-- purposes added, removed or with a changed notice compared with `previous_version` (the
-- version before it by effective day; versions are published in effective-day order). The
-- first version of a tenant is the baseline: nothing changed. `activated_at` is set once the
-- scheduler has flagged every consent that needs re-consent and published `policy.effective`.
CREATE TABLE policy_versions (
    tenant_id        uuid        NOT NULL REFERENCES tenants (id),
    version          text        NOT NULL CHECK (version ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    url              text        NOT NULL CHECK (length(url) <= 2048),
    published_at     timestamptz NOT NULL,
    announced_on     date        NOT NULL,  -- published_at's day in the tenant's time zone
    effective_on     date        NOT NULL,
    effective_at     timestamptz NOT NULL,  -- the start of effective_on in the tenant's zone
    previous_version text,
    changed_purposes text[]      NOT NULL DEFAULT '{}',
    activated_at     timestamptz,
    PRIMARY KEY (tenant_id, version),
    UNIQUE (tenant_id, effective_on),
    FOREIGN KEY (tenant_id, previous_version) REFERENCES policy_versions (tenant_id, version)
);

-- The purposes a version covers, with the notice text shown for each.
CREATE TABLE policy_version_purposes (
    tenant_id      uuid  NOT NULL,
    version        text  NOT NULL,
    purpose        text  NOT NULL,
    notice         text  NOT NULL CHECK (length(notice) BETWEEN 1 AND 20000),
    notice_sha256  bytea NOT NULL CHECK (length(notice_sha256) = 32),
    PRIMARY KEY (tenant_id, version, purpose),
    FOREIGN KEY (tenant_id, version) REFERENCES policy_versions (tenant_id, version),
    FOREIGN KEY (tenant_id, purpose) REFERENCES purposes (tenant_id, name)
);

-- Re-consent: set by the scheduler when a version that changed the purpose takes effect and
-- the consent was given under an earlier version; cleared by the next decision.
-- reconsent_policy_version: the version that asked for it (also what makes a resumed
-- activation skip the consents it already flagged).
ALTER TABLE consents
    ADD COLUMN needs_reconsent boolean NOT NULL DEFAULT false,
    ADD COLUMN reconsent_policy_version text;

SELECT consentry_isolate_tenant('purposes');
SELECT consentry_isolate_tenant('policy_versions');
SELECT consentry_isolate_tenant('policy_version_purposes');

GRANT SELECT, INSERT, UPDATE ON purposes TO consentry_consent_rw;
GRANT SELECT, INSERT ON policy_versions, policy_version_purposes TO consentry_consent_rw;
GRANT UPDATE (activated_at) ON policy_versions TO consentry_consent_rw;
GRANT EXECUTE ON FUNCTION consentry_seed_default_purposes(uuid) TO consentry_consent_rw;

-- The scheduler must find due versions of every tenant, which row-level security hides from
-- the application (and, under FORCE, from a non-superuser owner too).
-- consentry_due_policy_versions() is the one way to list them, built like
-- consentry_resolve_api_key() of migration 0003: for the duration of its query it sets
-- `consentry.policy_scheduler` to 'on', and this policy then shows the rows of versions not
-- yet activated; then it puts the previous value back. It returns only (tenant_id, version)
-- pairs; all further work happens per tenant in a tenant-scoped transaction. The setting
-- guards against mistakes in the application's queries, not against someone who runs SQL as
-- the application's role (who could read other tenants' unactivated versions: ids, URLs, dates
-- and notices, no personal data).
CREATE POLICY due_for_scheduler ON policy_versions FOR SELECT
    USING (activated_at IS NULL AND current_setting('consentry.policy_scheduler', true) = 'on');

CREATE FUNCTION consentry_due_policy_versions(due_by timestamptz)
RETURNS TABLE (tenant_id uuid, version text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    previous text := coalesce(current_setting('consentry.policy_scheduler', true), '');
BEGIN
    PERFORM set_config('consentry.policy_scheduler', 'on', true);
    RETURN QUERY
        SELECT p.tenant_id, p.version FROM public.policy_versions AS p
        WHERE p.activated_at IS NULL AND p.effective_at <= due_by
        ORDER BY p.effective_at, p.tenant_id, p.version;
    PERFORM set_config('consentry.policy_scheduler', previous, true);
END;
$$;
REVOKE ALL ON FUNCTION consentry_due_policy_versions(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION consentry_due_policy_versions(timestamptz) TO consentry_consent_rw;
