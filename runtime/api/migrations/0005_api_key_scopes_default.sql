-- The previous release's api (0.1.0) inserts API keys without naming their scopes, and while an
-- upgrade rolls, its replicas serve beside the new ones on this schema (expand and contract,
-- docs/operations.md "Upgrades"). Give the column back the rights such a key always had. This
-- release's api names the scopes of every key it creates, so the default applies to no key of
-- its own; a later release that no longer runs beside 0.1.0 may drop it again.
ALTER TABLE api_keys ALTER COLUMN scopes SET DEFAULT '{read,write,keys}';
