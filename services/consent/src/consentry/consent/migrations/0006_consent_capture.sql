-- Proof details of each decision, the receipt that covered it, and the child flag.

-- A subject flagged as a child (an age signal under 13 was given): consent-based purposes are
-- refused for it, checks answer `child`, and the erasure issue's child-data request erases it.
ALTER TABLE subjects
    ADD COLUMN is_child boolean NOT NULL DEFAULT false,
    ADD COLUMN child_flagged_at timestamptz;

-- receipt_id: the signed receipt returned for the call that recorded the decision.
-- client_fingerprint: HMAC(tenant subject key, client IP and user agent), hex; never the IP.
-- gpc: the request carried a Global Privacy Control signal.
ALTER TABLE consent_ledger
    ADD COLUMN receipt_id uuid,
    ADD COLUMN client_fingerprint text CHECK (client_fingerprint ~ '^[0-9a-f]{64}$'),
    ADD COLUMN gpc boolean NOT NULL DEFAULT false;
