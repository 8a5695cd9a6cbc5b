-- `consents.event_id` references `consent_ledger (event_id)`. Deleting ledger rows (only
-- `consentry_erase_subjects`, migration 0009) makes PostgreSQL check, for every deleted
-- row, that no current consent still points at it: without an index on the referencing
-- column that check is a sequential scan of `consents` per ledger row. Measured with
-- 100,000 subjects holding one consent each: erasing a chunk of 1,000 subjects took 10.7 s
-- (1 subject: 11.5 ms) without this index and 0.09 s (0.8 ms) with it
-- (bench/rights_erasure.py, docs/rights-requests.md).
CREATE INDEX consents_by_event ON consents (event_id);
