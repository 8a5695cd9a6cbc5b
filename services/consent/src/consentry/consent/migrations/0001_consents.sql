-- Tenants, subjects, the append-only consent ledger and the current consent state.

CREATE TABLE tenants (
    id           uuid        PRIMARY KEY,
    name         text        NOT NULL,
    subject_key  bytea       NOT NULL CHECK (length(subject_key) = 32),  -- HMAC key for subject refs
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- One row per known subject; `version` grows by one with every change (per-subject order).
CREATE TABLE subjects (
    tenant_id    uuid        NOT NULL REFERENCES tenants (id),
    subject_ref  text        NOT NULL,
    version      bigint      NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_ref)
);

-- Every decision ever recorded, with its proof; never updated or deleted by the application.
CREATE TABLE consent_ledger (
    event_id        uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL,
    subject_ref     text        NOT NULL,
    subject_version bigint      NOT NULL,
    purpose         text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('given', 'withdrawn')),
    policy_version  text        NOT NULL,
    method          text        NOT NULL,
    source          text,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, subject_ref, subject_version),
    FOREIGN KEY (tenant_id, subject_ref) REFERENCES subjects (tenant_id, subject_ref)
);

-- The current decision per subject and purpose: the fold of the ledger.
CREATE TABLE consents (
    tenant_id       uuid        NOT NULL,
    subject_ref     text        NOT NULL,
    purpose         text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('given', 'withdrawn')),
    policy_version  text        NOT NULL,
    method          text        NOT NULL,
    source          text,
    occurred_at     timestamptz NOT NULL,
    subject_version bigint      NOT NULL,
    event_id        uuid        NOT NULL REFERENCES consent_ledger (event_id),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, subject_ref, purpose),
    FOREIGN KEY (tenant_id, subject_ref) REFERENCES subjects (tenant_id, subject_ref)
);
