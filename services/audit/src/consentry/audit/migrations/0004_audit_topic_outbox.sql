-- The appender publishes every appended entry and every checkpoint on the audit topic through
-- the transactional outbox, so its processes may write the outbox (never the log itself).
GRANT SELECT, INSERT, UPDATE (published_at), DELETE ON eventing_outbox TO consentry_audit_writer;
GRANT USAGE ON SEQUENCE eventing_outbox_position_seq TO consentry_audit_writer;
