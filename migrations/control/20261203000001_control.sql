-- The control schema: the registry of tenants, their API keys, and the admin audit trail.
--
-- Everything here is shared by all tenants, so every statement that touches these tables names
-- the schema explicitly (`roster_control.tenants`). Tenant data never lives here: each tenant
-- has a schema of its own, named in `tenants.schema_name`.

create table roster_control.tenants (
    id uuid primary key,
    -- The tenant's public handle, used in `/scim/v2/<slug>`. Validated again by the application
    -- (which also refuses SCIM endpoint names); the check keeps bad rows out whatever writes them.
    slug text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name text not null check (length(name) between 1 and 200),
    -- active: served; suspended: SCIM answers 403, data kept.
    status text not null default 'active' check (status in ('active', 'suspended')),
    -- Generated at creation, never taken from a request: the only identifier Roster ever
    -- interpolates into SQL, so the pattern is enforced here as well as in code.
    schema_name text not null unique check (schema_name ~ '^t_[0-9a-f]{32}$'),
    -- The newest tenant migration applied to this tenant's schema (0 while being created).
    -- `roster migrate` advances it tenant by tenant, so an interrupted run resumes.
    schema_version bigint not null default 0,
    -- Requests per second over SCIM; null means the service default (ROSTER_DEFAULT_RATE_LIMIT).
    rate_limit_per_sec integer check (rate_limit_per_sec > 0),
    -- A synced group untouched for longer than this is flagged stale (three missed 40-minute
    -- Entra cycles by default).
    stale_after_secs integer not null default 7200 check (stale_after_secs > 0),
    journal_retention_days integer not null default 30 check (journal_retention_days > 0),
    -- The tenant's own FusionAuth. All null: shadow mode (users kept in Roster only).
    fusionauth_base_url text,
    -- The FusionAuth API key, sealed with AES-256-GCM under ROSTER_KEY_ENCRYPTION_KEY.
    fusionauth_api_key_sealed bytea,
    fusionauth_tenant_id uuid,
    fusionauth_application_id uuid,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint fusionauth_connection_complete check (
        (fusionauth_base_url is null) = (fusionauth_api_key_sealed is null)
        and (fusionauth_base_url is null) = (fusionauth_tenant_id is null)
    )
);

-- Service-account API keys that Entra presents as its Secret Token. Only a SHA-256 of the key is
-- stored: keys carry 256 random bits, so a slow password hash would buy nothing.
create table roster_control.api_keys (
    id uuid primary key,
    tenant_id uuid not null references roster_control.tenants (id) on delete cascade,
    service_account text not null check (length(service_account) between 1 and 100),
    -- The first characters of the key, shown in listings so people can tell keys apart.
    prefix text not null,
    key_hash bytea not null unique,
    created_at timestamptz not null default now(),
    expires_at timestamptz,
    revoked_at timestamptz,
    -- Written at most about once a minute per key (see tenancy::keys), not on every request.
    last_used_at timestamptz
);

create index api_keys_tenant_idx on roster_control.api_keys (tenant_id);

-- Every change made through the admin API or the CLI, with who made it.
create table roster_control.admin_audit (
    id bigint generated always as identity primary key,
    at timestamptz not null default now(),
    -- The token subject for the admin API, `cli:<os user>` for the command line.
    actor text not null,
    action text not null,
    tenant_id uuid,
    target text,
    detail jsonb not null default '{}'
);

create index admin_audit_tenant_at_idx on roster_control.admin_audit (tenant_id, at);
