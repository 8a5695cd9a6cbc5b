-- API keys may also carry the other services' scopes: the consent service is the authority
-- for every service's keys (the tenant directory, docs/adr/0008-tenant-directory.md).
ALTER TABLE api_keys DROP CONSTRAINT api_keys_scopes_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_check CHECK (
    cardinality(scopes) BETWEEN 1 AND 13
    AND scopes <@ ARRAY['consent:read', 'consent:write', 'policy:admin', 'audit:read',
                        'preferences:read', 'preferences:write', 'preferences:admin',
                        'lists:read', 'rights:read', 'rights:write', 'subprocessors:read',
                        'subprocessors:admin', 'admin']::text[]
);
