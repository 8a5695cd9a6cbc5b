-- Marketing lists and the suppression list, kept by the marketing-list processor from the
-- preferences and consent topics (docs/lists.md, docs/adr/0009-list-processor.md). Row-level
-- security as in 0001: every statement runs with `consentry.tenant_id` set.

-- Per subject, what the processor has applied: the last preferences version and the last
-- consent version (the consent service's per-subject version of a `marketing-email`
-- decision), and that decision. An event older than what is recorded here is stale and
-- ignored; one with the same version is applied again (state-based, so harmless).
CREATE TABLE list_subjects (
    tenant_id            uuid        NOT NULL,
    subject_ref          text        NOT NULL CHECK (subject_ref ~ '^[0-9a-f]{64}$'),
    preferences_version  bigint      NOT NULL DEFAULT 0,
    consent_version      bigint      NOT NULL DEFAULT 0,
    marketing_consent    boolean,    -- NULL: no marketing-email decision seen yet
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_ref)
);
SELECT consentry_isolate_tenant('list_subjects');

-- List membership: one row per subject subscribed to a marketing topic on a channel. The
-- primary key is also the keyset order of `GET /v1/lists/{topic}/members`. `blocked` says
-- why a member may not be sent to (NULL: sendable): the most serious of 1 erased, 2 consent
-- withdrawn, 3 unsubscribed (suppressions covering the list), 4 no marketing-email consent.
-- The processor recomputes it for every subject it touches, in the same transaction, so that
-- the list API and the filter read one table instead of three.
CREATE TABLE list_members (
    tenant_id    uuid        NOT NULL,
    topic        text        NOT NULL CHECK (topic ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    channel      text        NOT NULL CHECK (channel IN ('email', 'sms', 'push')),
    subject_ref  text        NOT NULL CHECK (subject_ref ~ '^[0-9a-f]{64}$'),
    blocked      smallint    CHECK (blocked BETWEEN 1 AND 4),
    joined_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, topic, channel, subject_ref)
);
SELECT consentry_isolate_tenant('list_members');
CREATE INDEX list_members_subject ON list_members (tenant_id, subject_ref);

-- The suppression list: who must not be sent marketing, on which list, and why. `topic` ''
-- covers every marketing topic, `channel` '' every channel. A subject may be suppressed for
-- several reasons at once; lifting one (re-consent, an explicit subscribe) leaves the
-- others. `erased` is never lifted. Rows outlive list membership, so a later import of a
-- send list cannot bring a suppressed subject back (the filter API checks against them).
CREATE TABLE list_suppressions (
    tenant_id        uuid        NOT NULL,
    subject_ref      text        NOT NULL CHECK (subject_ref ~ '^[0-9a-f]{64}$'),
    topic            text        NOT NULL CHECK (topic = '' OR topic ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    channel          text        NOT NULL CHECK (channel IN ('', 'email', 'sms', 'push')),
    reason           text        NOT NULL CHECK (
        reason IN ('unsubscribed', 'consent-withdrawn', 'erased')
    ),
    suppressed_at    timestamptz NOT NULL DEFAULT now(),
    subject_version  bigint      NOT NULL,
    PRIMARY KEY (tenant_id, subject_ref, topic, channel, reason)
);
SELECT consentry_isolate_tenant('list_suppressions');

-- A change feed for the API's in-memory copies of lists (the suppression filter, ADR 0009).
-- Every transaction that changes a tenant's lists bumps the tenant's generation and records
-- the subjects it touched under it. The bump takes the tenant's row lock until commit, so a
-- tenant's generations commit in order: a reader that sees generation G has every change up
-- to G committed. Old changes are pruned; `pruned_through` says up to which generation.
CREATE TABLE list_generations (
    tenant_id       uuid        PRIMARY KEY,
    generation      bigint      NOT NULL DEFAULT 0,
    pruned_through  bigint      NOT NULL DEFAULT 0
);
SELECT consentry_isolate_tenant('list_generations');

CREATE TABLE list_changes (
    tenant_id    uuid        NOT NULL,
    generation   bigint      NOT NULL,
    subject_ref  text        NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
SELECT consentry_isolate_tenant('list_changes');
CREATE INDEX list_changes_generation ON list_changes (tenant_id, generation);

GRANT SELECT, INSERT, UPDATE, DELETE
    ON list_subjects, list_members, list_suppressions, list_generations, list_changes
    TO consentry_preferences_rw;
