-- Tenancy, auth, agents, widget sessions, calls and transcripts, audit log, referrals.
-- Every tenant-owned row carries org_id, and every query filters on it.

CREATE TABLE orgs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name text NOT NULL,
    max_concurrent_calls integer NOT NULL DEFAULT 20,
    referral_code text NOT NULL UNIQUE,
    referred_by uuid REFERENCES orgs (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    email text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL DEFAULT 'owner',
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

-- Rotating refresh tokens: each use marks the row used and issues a sibling in the same
-- family; presenting a used token revokes the whole family (theft detection).
CREATE TABLE refresh_tokens (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    family_id uuid NOT NULL,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    token_hash bytea NOT NULL UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    name text NOT NULL,
    prefix text NOT NULL,
    key_hash bytea NOT NULL UNIQUE,
    created_by text NOT NULL,
    expires_at timestamptz,
    last_used_at timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX api_keys_org ON api_keys (org_id);

CREATE TABLE agents (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    public_id text NOT NULL UNIQUE,
    name text NOT NULL,
    instructions text NOT NULL,
    voice text NOT NULL,
    language text NOT NULL,
    model text,
    greeting text NOT NULL,
    max_session_seconds integer NOT NULL,
    max_concurrent_calls integer NOT NULL,
    tools jsonb NOT NULL DEFAULT '[]',
    allowed_origins text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    -- soft delete: past calls and transcripts keep their agent
    deleted_at timestamptz
);
CREATE INDEX agents_org ON agents (org_id) WHERE deleted_at IS NULL;

CREATE TABLE widget_sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash bytea NOT NULL UNIQUE,
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    origin text NOT NULL,
    end_user_id text,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX widget_sessions_expiry ON widget_sessions (expires_at);

CREATE TABLE calls (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    agent_id uuid NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    origin text NOT NULL,
    end_user_id text,
    instance_id text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at timestamptz,
    duration_ms bigint,
    end_reason text,
    prompt_tokens bigint,
    response_tokens bigint,
    total_tokens bigint
);
CREATE INDEX calls_org_started ON calls (org_id, started_at DESC, id DESC);
CREATE INDEX calls_org_end_user ON calls (org_id, end_user_id) WHERE end_user_id IS NOT NULL;

CREATE TABLE transcript_segments (
    call_id uuid NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq integer NOT NULL,
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('user', 'agent')),
    text text NOT NULL,
    at timestamptz NOT NULL,
    PRIMARY KEY (call_id, seq)
);

-- Append-only, hash-chained per chain ('org:<uuid>' for a tenant, 'system' for operators).
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    chain text NOT NULL,
    seq bigint NOT NULL,
    org_id uuid REFERENCES orgs (id) ON DELETE CASCADE,
    actor text NOT NULL,
    action text NOT NULL,
    target text,
    detail jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    UNIQUE (chain, seq)
);

CREATE TABLE referral_payouts (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    amount_cents bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE referral_rewards (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
    referred_org_id uuid NOT NULL UNIQUE REFERENCES orgs (id) ON DELETE CASCADE,
    amount_cents bigint NOT NULL,
    payout_id uuid REFERENCES referral_payouts (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX referral_rewards_org ON referral_rewards (org_id);
