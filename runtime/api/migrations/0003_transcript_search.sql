-- Transcript search (GET /api/v1/sessions?q=...): case-insensitive substring match (ILIKE),
-- served by a trigram index. Substrings rather than full-text search because visitors' calls
-- are in any language (one text-search configuration would stem most of them wrongly, and
-- 'simple' matches whole words only) and what tenants look for is often a fragment: an order
-- number, a name, part of a word; that is also what the dashboard's search did before.
-- pg_trgm ships with PostgreSQL (contrib, in Debian's postgresql-15) and is a trusted
-- extension. The index build locks writes to the table while it runs (seconds at an
-- appliance's size); it cannot be CONCURRENTLY inside the migration's transaction.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX transcript_segments_text_trgm ON transcript_segments USING gin (text gin_trgm_ops);
