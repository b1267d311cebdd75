-- One tenant's directory: users, groups, memberships and the sync journal.
--
-- This file runs once per tenant schema, with `search_path` set to that schema alone, so the
-- names below are unqualified on purpose. Application queries list their columns explicitly:
-- a pooled connection caches statements across tenants, and `select *` would break the moment
-- two schemas differ by a migration.

-- People provisioned by Entra (source 'scim') or created in the platform (source 'platform').
-- SCIM values are stored verbatim; uniqueness is case-insensitive, enforced by the indexes below
-- so two concurrent creates cannot both win.
create table users (
    id uuid primary key,
    user_name text not null,
    external_id text,
    display_name text,
    given_name text,
    family_name text,
    formatted_name text,
    -- The email Entra matches on (type "work", else primary, else first): indexed and unique.
    work_email text,
    -- Every email as sent: [{"value": ..., "type": ..., "primary": ...}].
    emails jsonb not null default '[]',
    active boolean not null default true,
    source text not null default 'scim' check (source in ('scim', 'platform')),
    -- The linked FusionAuth user; null in shadow mode.
    fusionauth_user_id uuid,
    -- How the FusionAuth user came to be: created, linked (email already there) or skipped.
    fusionauth_link text check (fusionauth_link in ('created', 'linked', 'skipped')),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create unique index users_user_name_key on users (lower(user_name));
create unique index users_work_email_key on users (lower(work_email));
create index users_external_id_idx on users (external_id);
create index users_created_idx on users (created_at, id);

-- Platform groups. Only groups with sync_enabled and an external_id (the Entra group's object
-- id) are visible over SCIM. The Basic User group is the safety net: a system group that is
-- never synced and cannot be deleted.
create table groups (
    id uuid primary key,
    display_name text not null,
    external_id text,
    sync_enabled boolean not null default false,
    permissions text[] not null default '{}',
    is_basic_user boolean not null default false,
    last_synced_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint basic_user_is_not_synced check (not (is_basic_user and sync_enabled))
);

create unique index groups_external_id_key on groups (external_id);
create unique index groups_single_basic_user on groups (is_basic_user) where is_basic_user;
create index groups_display_name_idx on groups (lower(display_name));

create table memberships (
    group_id uuid not null references groups (id) on delete cascade,
    user_id uuid not null references users (id) on delete cascade,
    -- scim: applied from an Entra group PATCH; safety_net: Basic User placement;
    -- platform: added through the admin API.
    source text not null check (source in ('scim', 'safety_net', 'platform')),
    created_at timestamptz not null default now(),
    primary key (group_id, user_id)
);

create index memberships_user_idx on memberships (user_id);

-- Background jobs (journal pruning) and the safety net look memberships up by user and group
-- through the primary key and the index above; member counts are computed from them on demand
-- rather than kept in a counter, which would make every group's row a hot spot.

-- What each SCIM request did, and every change the safety net made. Support reads this first
-- when someone "didn't get access". Pruned by age (tenants.journal_retention_days).
create table journal (
    id bigint generated always as identity primary key,
    at timestamptz not null default now(),
    request_id text,
    operation text not null,
    outcome text not null
        check (outcome in ('matched', 'created', 'changed', 'ignored', 'rejected', 'failed')),
    status smallint,
    user_id uuid,
    group_id uuid,
    -- Short and redacted: never an email, a name or a filter value.
    detail text,
    -- Entra dialect variations the request showed (see api::scim::quirks).
    quirks text[] not null default '{}',
    fusionauth_outcome text,
    fusionauth_latency_ms integer
);

create index journal_at_idx on journal (at);
create index journal_user_at_idx on journal (user_id, at) where user_id is not null;
create index journal_group_at_idx on journal (group_id, at) where group_id is not null;

insert into groups (id, display_name, is_basic_user, permissions)
values (gen_random_uuid(), 'Basic User', true, '{}');
