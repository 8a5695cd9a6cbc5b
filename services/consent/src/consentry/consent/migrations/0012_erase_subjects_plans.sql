-- The erasure of a fan-out chunk keeps PostgreSQL's own plan caching whatever the caller's
-- session says. The `rights` worker plans its statements for their parameters
-- (plan_cache_mode = force_custom_plan): planned for the 1,000 references of a chunk, the
-- function's deletions scanned the consent tables sequentially (20 million rows read during
-- one 100,000-subject erasure, the fan-out 106-113 s instead of 73-76 s); with the default,
-- its cached plans look each subject up by index.
ALTER FUNCTION consentry_erase_subjects(uuid, text[]) SET plan_cache_mode = auto;
