-- API keys carry scopes (runtime/api/principal.py): read, write (tenant resources) and keys
-- (API key management). Keys created before this migration keep every right they had; new
-- keys name theirs (the API always does, so the column has no default).
ALTER TABLE api_keys ADD COLUMN scopes text[] NOT NULL DEFAULT '{read,write,keys}';
ALTER TABLE api_keys ALTER COLUMN scopes DROP DEFAULT;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_scopes_known
    CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['read', 'write', 'keys']::text[]);
