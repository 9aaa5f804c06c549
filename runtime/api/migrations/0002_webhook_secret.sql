-- Each agent signs its tool webhook calls (HMAC-SHA256) with its own secret, so a tenant's
-- webhook can tell OrbisVoice's calls from anyone else's. gen_random_uuid() draws from a
-- strong random source; two of them give 244 random bits, with no extension needed.
ALTER TABLE agents
    ADD COLUMN webhook_secret text NOT NULL
    DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');
