-- Append-only for real: the application never owns the log.
--
-- `consentry_audit_writer` is a group role (NOLOGIN) for the audit processes: it may read the
-- log, claim inbox rows and call audit_append() (SECURITY DEFINER, so appends happen with the
-- owner's rights), and nothing else: no INSERT, UPDATE, DELETE or TRUNCATE on the log. Login
-- roles of the appender and the API are made members of it (the dev stack does that for
-- `consentry_audit_app`; in production the operator does). The triggers of 0001 refuse
-- UPDATE, DELETE and TRUNCATE even to the owner.

DO $$
BEGIN
    CREATE ROLE consentry_audit_writer NOLOGIN;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;  -- roles are cluster-wide; it exists
END;
$$;

REVOKE ALL ON audit_entries, audit_chain_heads FROM PUBLIC;
GRANT SELECT ON audit_entries, audit_chain_heads TO consentry_audit_writer;
GRANT SELECT, INSERT ON eventing_inbox TO consentry_audit_writer;

ALTER FUNCTION audit_append(uuid, text, text, text, bytea)
    SECURITY DEFINER SET search_path = pg_catalog, public;
REVOKE ALL ON FUNCTION audit_append(uuid, text, text, text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit_append(uuid, text, text, text, bytea) TO consentry_audit_writer;
