-- Batched appends: many entries, of one tenant or several, in one call.
--
-- audit_append_batch() appends exactly as one audit_append() call per element, in array
-- order, would (same seqs, leaf, chain and Merkle frontier; see 0001 and 0003), and returns
-- one row per element with its seq and hashes, so the caller needs no second read:
--
--   ord        1-based position of the element in the arrays
--   appended   true if this call appended it; false if the event id was already in the
--              tenant's chain (or earlier in the same arrays), in which case seq and hashes
--              are those of the entry already stored
--
-- Heads are locked in tenant_id order (rows are locked after the sort), so concurrent
-- batches of several tenants cannot deadlock each other or the checkpointer, which also takes
-- heads in tenant order. The existing-entry check runs after the locks, like audit_append's.

CREATE FUNCTION audit_append_batch(
    p_tenant_ids uuid[], p_event_ids text[], p_event_types text[], p_subject_refs text[],
    p_entries bytea[]
) RETURNS TABLE (ord integer, seq bigint, leaf_hash bytea, chain_hash bytea, appended boolean)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
#variable_conflict use_column
DECLARE
    n          integer := coalesce(array_length(p_tenant_ids, 1), 0);
    r          record;
    v_tenant   uuid;
    v_start    bigint;
    v_seq      bigint;
    v_prev     bytea;
    v_frontier bytea[];
    v_len      integer;
    v_leaf     bytea;
    v_node     bytea;
    v_size     bigint;
    k          integer := 0;
    o_seq      bigint[];
    o_leaf     bytea[];
    o_chain    bytea[];
    o_new      boolean[];
    i_tenant   uuid[];
    i_seq      bigint[];
    i_event    text[];
    i_type     text[];
    i_subject  text[];
    i_entry    bytea[];
    i_leaf     bytea[];
    i_chain    bytea[];
BEGIN
    IF coalesce(array_length(p_event_ids, 1), 0) <> n
       OR coalesce(array_length(p_event_types, 1), 0) <> n
       OR coalesce(array_length(p_subject_refs, 1), 0) <> n
       OR coalesce(array_length(p_entries, 1), 0) <> n THEN
        RAISE EXCEPTION 'audit_append_batch: the arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN;
    END IF;
    IF array_position(p_tenant_ids, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'audit_append_batch: a tenant id is null'
            USING ERRCODE = 'not_null_violation';
    END IF;

    INSERT INTO audit_chain_heads (tenant_id, seq, chain_hash)
    SELECT t, 0, decode(repeat('00', 32), 'hex')
    FROM (SELECT DISTINCT t FROM unnest(p_tenant_ids) AS t WHERE t IS NOT NULL) AS d
    ORDER BY t
    ON CONFLICT (tenant_id) DO NOTHING;
    -- The head row locks serialise appends per tenant: each chain has exactly one order.
    PERFORM 1 FROM audit_chain_heads AS h
    WHERE h.tenant_id = ANY (p_tenant_ids) ORDER BY h.tenant_id FOR UPDATE;

    FOR r IN
        SELECT u.i, u.tenant_id, u.event_id, u.event_type, u.subject_ref, u.entry,
               first_value(u.i) OVER same_event AS first_i,
               e.seq AS old_seq, e.leaf_hash AS old_leaf, e.chain_hash AS old_chain
        FROM unnest(p_tenant_ids, p_event_ids, p_event_types, p_subject_refs, p_entries)
             WITH ORDINALITY AS u (tenant_id, event_id, event_type, subject_ref, entry, i)
        LEFT JOIN audit_entries AS e
               ON e.tenant_id = u.tenant_id AND e.event_id = u.event_id
        WINDOW same_event AS (PARTITION BY u.tenant_id, u.event_id ORDER BY u.i)
        ORDER BY u.tenant_id, u.i
    LOOP
        IF v_tenant IS DISTINCT FROM r.tenant_id THEN
            IF v_seq > v_start THEN
                UPDATE audit_chain_heads
                SET seq = v_seq, chain_hash = v_prev, frontier = v_frontier[1:v_len]
                WHERE tenant_id = v_tenant;
            END IF;
            v_tenant := r.tenant_id;
            SELECT h.seq, h.chain_hash, h.frontier INTO v_start, v_prev, v_frontier
            FROM audit_chain_heads AS h WHERE h.tenant_id = r.tenant_id;
            v_seq := v_start;
            v_len := coalesce(array_length(v_frontier, 1), 0);
        END IF;
        IF r.old_seq IS NOT NULL THEN  -- idempotent: the event is already in the chain
            o_seq[r.i] := r.old_seq;
            o_leaf[r.i] := r.old_leaf;
            o_chain[r.i] := r.old_chain;
            o_new[r.i] := false;
        ELSIF r.first_i <> r.i THEN    -- the same event earlier in these arrays
            o_seq[r.i] := o_seq[r.first_i];
            o_leaf[r.i] := o_leaf[r.first_i];
            o_chain[r.i] := o_chain[r.first_i];
            o_new[r.i] := false;
        ELSE
            v_leaf := sha256('\x00'::bytea || r.entry);
            v_prev := sha256(v_prev || v_leaf);
            -- audit_frontier_push, in place: merge equal-sized subtrees, then push.
            v_node := v_leaf;
            v_size := v_seq;
            WHILE v_size & 1 = 1 LOOP
                v_node := sha256('\x01'::bytea || v_frontier[v_len] || v_node);
                v_len := v_len - 1;
                v_size := v_size >> 1;
            END LOOP;
            v_len := v_len + 1;
            v_frontier[v_len] := v_node;
            v_seq := v_seq + 1;
            o_seq[r.i] := v_seq;
            o_leaf[r.i] := v_leaf;
            o_chain[r.i] := v_prev;
            o_new[r.i] := true;
            k := k + 1;
            i_tenant[k] := r.tenant_id;
            i_seq[k] := v_seq;
            i_event[k] := r.event_id;
            i_type[k] := r.event_type;
            i_subject[k] := r.subject_ref;
            i_entry[k] := r.entry;
            i_leaf[k] := v_leaf;
            i_chain[k] := v_prev;
        END IF;
    END LOOP;
    IF v_seq > v_start THEN
        UPDATE audit_chain_heads
        SET seq = v_seq, chain_hash = v_prev, frontier = v_frontier[1:v_len]
        WHERE tenant_id = v_tenant;
    END IF;

    IF k > 0 THEN
        INSERT INTO audit_entries (tenant_id, seq, event_id, event_type, subject_ref, entry,
                                   leaf_hash, chain_hash)
        SELECT * FROM unnest(i_tenant, i_seq, i_event, i_type, i_subject, i_entry, i_leaf,
                             i_chain);
    END IF;
    RETURN QUERY
        SELECT g.i, o_seq[g.i], o_leaf[g.i], o_chain[g.i], o_new[g.i]
        FROM generate_series(1, n) AS g (i);
END;
$$;

REVOKE ALL ON FUNCTION audit_append_batch(uuid[], text[], text[], text[], bytea[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append_batch(uuid[], text[], text[], text[], bytea[])
    TO consentry_audit_writer;
