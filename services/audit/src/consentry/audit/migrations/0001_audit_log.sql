-- The append-only, hash-chained audit log: one chain per tenant.
--
-- leaf_hash  = SHA-256(0x00 || entry)            (RFC 6962 leaf hash of the stored bytes)
-- chain_hash = SHA-256(previous chain_hash || leaf_hash), the first entry chaining from
--              32 zero bytes.
-- Entries are written only by audit_append(); UPDATE, DELETE and TRUNCATE are refused by
-- triggers that fire even in replica mode (ENABLE ALWAYS).

CREATE TABLE audit_chain_heads (
    tenant_id   uuid   PRIMARY KEY,
    seq         bigint NOT NULL,
    chain_hash  bytea  NOT NULL CHECK (length(chain_hash) = 32)
);

CREATE TABLE audit_entries (
    tenant_id    uuid        NOT NULL,
    seq          bigint      NOT NULL CHECK (seq >= 1),
    event_id     text        NOT NULL,
    event_type   text        NOT NULL,
    subject_ref  text        NOT NULL,
    entry        bytea       NOT NULL,   -- serialised consentry.audit.v1.AuditEntry
    leaf_hash    bytea       NOT NULL CHECK (length(leaf_hash) = 32),
    chain_hash   bytea       NOT NULL CHECK (length(chain_hash) = 32),
    appended_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, seq),
    UNIQUE (tenant_id, event_id)
);

CREATE INDEX audit_entries_subject ON audit_entries (tenant_id, subject_ref, seq);

CREATE FUNCTION audit_append(
    p_tenant_id uuid, p_event_id text, p_event_type text, p_subject_ref text, p_entry bytea
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_seq   bigint;
    v_prev  bytea;
    v_leaf  bytea;
    v_chain bytea;
    v_found bigint;
BEGIN
    INSERT INTO audit_chain_heads (tenant_id, seq, chain_hash)
    VALUES (p_tenant_id, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT (tenant_id) DO NOTHING;
    -- The head row lock serialises appends per tenant: the chain has exactly one order.
    SELECT seq, chain_hash INTO v_seq, v_prev
    FROM audit_chain_heads WHERE tenant_id = p_tenant_id FOR UPDATE;
    SELECT seq INTO v_found FROM audit_entries
    WHERE tenant_id = p_tenant_id AND event_id = p_event_id;
    IF FOUND THEN
        RETURN v_found;  -- idempotent: the event is already in the chain
    END IF;
    v_leaf := sha256('\x00'::bytea || p_entry);
    v_chain := sha256(v_prev || v_leaf);
    INSERT INTO audit_entries (tenant_id, seq, event_id, event_type, subject_ref, entry,
                               leaf_hash, chain_hash)
    VALUES (p_tenant_id, v_seq + 1, p_event_id, p_event_type, p_subject_ref, p_entry,
            v_leaf, v_chain);
    UPDATE audit_chain_heads SET seq = v_seq + 1, chain_hash = v_chain
    WHERE tenant_id = p_tenant_id;
    RETURN v_seq + 1;
END;
$$;

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_entries_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_entries
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_entries_no_truncate
    BEFORE TRUNCATE ON audit_entries
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER audit_entries_no_update_delete;
ALTER TABLE audit_entries ENABLE ALWAYS TRIGGER audit_entries_no_truncate;
