-- RFC 6962 Merkle tree per tenant and signed checkpoints.
--
-- Each chain head keeps the tree's compact range (`frontier`): the roots of the perfect
-- subtrees that the binary form of the tree size splits it into, largest first. Appending a
-- leaf merges equal-sized subtrees (node = SHA-256(0x01 || left || right)); the root of the
-- whole tree folds the frontier from the right. So a checkpoint's root costs O(log n).

ALTER TABLE audit_chain_heads ADD COLUMN frontier bytea[] NOT NULL DEFAULT '{}';

CREATE FUNCTION audit_frontier_push(p_frontier bytea[], p_size bigint, p_leaf bytea)
RETURNS bytea[] LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_node bytea := p_leaf;
    v_size bigint := p_size;        -- leaves before this one
    v_frontier bytea[] := p_frontier;
BEGIN
    WHILE v_size & 1 = 1 LOOP
        v_node := sha256('\x01'::bytea || v_frontier[array_length(v_frontier, 1)] || v_node);
        v_frontier := v_frontier[1:array_length(v_frontier, 1) - 1];
        v_size := v_size >> 1;
    END LOOP;
    RETURN array_append(v_frontier, v_node);
END;
$$;

CREATE FUNCTION audit_frontier_root(p_frontier bytea[]) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v_root bytea;
    i int;
BEGIN
    IF coalesce(array_length(p_frontier, 1), 0) = 0 THEN
        RETURN sha256(''::bytea);  -- RFC 6962: the hash of an empty tree
    END IF;
    v_root := p_frontier[array_length(p_frontier, 1)];
    FOR i IN REVERSE array_length(p_frontier, 1) - 1 .. 1 LOOP
        v_root := sha256('\x01'::bytea || p_frontier[i] || v_root);
    END LOOP;
    RETURN v_root;
END;
$$;

-- Existing chains: rebuild their frontier from the stored leaf hashes.
DO $$
DECLARE
    r record;
    e record;
    v_frontier bytea[];
    v_size bigint;
BEGIN
    FOR r IN SELECT tenant_id FROM audit_chain_heads LOOP
        v_frontier := '{}';
        v_size := 0;
        FOR e IN SELECT leaf_hash FROM audit_entries WHERE tenant_id = r.tenant_id ORDER BY seq LOOP
            v_frontier := audit_frontier_push(v_frontier, v_size, e.leaf_hash);
            v_size := v_size + 1;
        END LOOP;
        UPDATE audit_chain_heads SET frontier = v_frontier WHERE tenant_id = r.tenant_id;
    END LOOP;
END;
$$;

CREATE OR REPLACE FUNCTION audit_append(
    p_tenant_id uuid, p_event_id text, p_event_type text, p_subject_ref text, p_entry bytea
) RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_seq      bigint;
    v_prev     bytea;
    v_frontier bytea[];
    v_leaf     bytea;
    v_chain    bytea;
    v_found    bigint;
BEGIN
    INSERT INTO audit_chain_heads (tenant_id, seq, chain_hash)
    VALUES (p_tenant_id, 0, decode(repeat('00', 32), 'hex'))
    ON CONFLICT (tenant_id) DO NOTHING;
    -- The head row lock serialises appends per tenant: the chain has exactly one order.
    SELECT seq, chain_hash, frontier INTO v_seq, v_prev, v_frontier
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
    UPDATE audit_chain_heads
    SET seq = v_seq + 1, chain_hash = v_chain,
        frontier = audit_frontier_push(v_frontier, v_seq, v_leaf)
    WHERE tenant_id = p_tenant_id;
    RETURN v_seq + 1;
END;
$$;

-- Public keys of every signing key ever used: old checkpoints stay verifiable after rotation.
CREATE TABLE audit_signing_keys (
    key_id      text        PRIMARY KEY,
    algorithm   text        NOT NULL CHECK (algorithm = 'Ed25519'),
    public_key  bytea       NOT NULL CHECK (length(public_key) = 32),
    first_used  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_checkpoints (
    tenant_id        uuid        NOT NULL,
    tree_size        bigint      NOT NULL CHECK (tree_size >= 1),
    root_hash        bytea       NOT NULL CHECK (length(root_hash) = 32),
    checkpoint_time  timestamptz NOT NULL,
    key_id           text        NOT NULL REFERENCES audit_signing_keys (key_id),
    signature        bytea       NOT NULL CHECK (length(signature) = 64),
    PRIMARY KEY (tenant_id, tree_size)
);

CREATE FUNCTION audit_register_key(p_key_id text, p_public_key bytea) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
BEGIN
    INSERT INTO audit_signing_keys (key_id, algorithm, public_key)
    VALUES (p_key_id, 'Ed25519', p_public_key)
    ON CONFLICT (key_id) DO NOTHING;
    IF NOT EXISTS (SELECT 1 FROM audit_signing_keys
                   WHERE key_id = p_key_id AND public_key = p_public_key) THEN
        RAISE EXCEPTION 'key id % is already registered with another public key', p_key_id
            USING ERRCODE = 'unique_violation';
    END IF;
END;
$$;

-- Stores a checkpoint only if it describes the tenant's tree as it is now (head locked).
CREATE FUNCTION audit_add_checkpoint(
    p_tenant_id uuid, p_tree_size bigint, p_root_hash bytea, p_time timestamptz,
    p_key_id text, p_signature bytea
) RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
    v_seq      bigint;
    v_frontier bytea[];
BEGIN
    SELECT seq, frontier INTO v_seq, v_frontier
    FROM audit_chain_heads WHERE tenant_id = p_tenant_id FOR UPDATE;
    IF NOT FOUND OR v_seq <> p_tree_size OR audit_frontier_root(v_frontier) <> p_root_hash THEN
        RAISE EXCEPTION 'checkpoint does not match the tree of tenant % at size %',
            p_tenant_id, p_tree_size USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO audit_checkpoints (tenant_id, tree_size, root_hash, checkpoint_time, key_id,
                                   signature)
    VALUES (p_tenant_id, p_tree_size, p_root_hash, p_time, p_key_id, p_signature)
    ON CONFLICT (tenant_id, tree_size) DO NOTHING;
END;
$$;

CREATE TRIGGER audit_checkpoints_no_update_delete
    BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate
    BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
ALTER TABLE audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_no_update_delete;
ALTER TABLE audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_no_truncate;

REVOKE ALL ON audit_signing_keys, audit_checkpoints FROM PUBLIC;
GRANT SELECT ON audit_signing_keys, audit_checkpoints TO consentry_audit_writer;
REVOKE ALL ON FUNCTION audit_register_key(text, bytea) FROM PUBLIC;
REVOKE ALL ON FUNCTION audit_add_checkpoint(uuid, bigint, bytea, timestamptz, text, bytea)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_register_key(text, bytea) TO consentry_audit_writer;
GRANT EXECUTE ON FUNCTION audit_add_checkpoint(uuid, bigint, bytea, timestamptz, text, bytea)
    TO consentry_audit_writer;

-- The tenant's tree as it is now, its head locked until the caller's transaction ends, so a
-- checkpoint signed in between describes exactly this tree.
CREATE FUNCTION audit_lock_head(p_tenant_id uuid)
RETURNS TABLE (tree_size bigint, root_hash bytea, last_checkpoint_size bigint,
               last_checkpoint_time timestamptz)
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
    SELECT h.seq, audit_frontier_root(h.frontier), c.tree_size, c.checkpoint_time
    FROM (SELECT * FROM audit_chain_heads WHERE tenant_id = p_tenant_id FOR UPDATE) AS h
    LEFT JOIN LATERAL (
        SELECT tree_size, checkpoint_time FROM audit_checkpoints
        WHERE tenant_id = p_tenant_id ORDER BY tree_size DESC LIMIT 1
    ) AS c ON true
$$;
REVOKE ALL ON FUNCTION audit_lock_head(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_lock_head(uuid) TO consentry_audit_writer;
