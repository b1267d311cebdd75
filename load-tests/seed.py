#!/usr/bin/env python3
"""Seeds the load-test tenants and writes the seed file the k6 scripts read.

Tenants are named load-00001, load-00002, ... and are reused across runs: only the missing ones
are created, with `roster tenant create` run a few at a time (the product's own path: schema and
migrations in one transaction). Everything else is bulk SQL, in one transaction per chunk of
tenants, so seeding 10,000 tenants stays practical:

- one API key per tenant for the service account `k6-load`, generated here in Roster's format
  (`rst_` + 43 base64url characters, stored as its SHA-256 with a 12-character prefix);
- synced groups (External Group ID = a random Entra-style object id, Sync Enabled);
- existing users for the steady-state re-matches, each in the tenant's Basic User group (the
  safety net's invariant for a user in no synced group).

Keys cannot be read back from the database, so the state file (gitignored) remembers each
tenant's key, groups and users; a tenant whose id or key no longer matches is seeded afresh.
Every load tenant is connected to the FusionAuth double: `roster tenant set-fusionauth` for the
first one, then its sealed connection is copied to the others in one statement (the sealing has
no per-tenant associated data, so the copy opens with the same key-encryption key).
"""

import argparse
import hashlib
import json
import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

SLUG_FORMAT = "load-{:05d}"
SLUG_PATTERN = "^load-[0-9]{5}$"
SCHEMA_PATTERN = re.compile(r"^t_[0-9a-f]{32}$")
SERVICE_ACCOUNT = "k6-load"
CHUNK = 500


def fail(message):
    sys.exit(f"seed: {message}")


def psql(db, sql):
    """Runs `sql` in one psql session (stop at the first error) and returns the rows."""
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", db],
        input=sql,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        fail(f"psql failed: {done.stderr.strip()[:2000]}")
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def existing_tenants(db):
    rows = psql(
        db,
        "select slug, id, schema_name from roster_control.tenants "
        f"where slug ~ '{SLUG_PATTERN}' order by slug;",
    )
    tenants = {}
    for slug, tenant_id, schema in rows:
        if not SCHEMA_PATTERN.match(schema):
            fail(f"tenant {slug} has an unexpected schema name")
        tenants[slug] = {"id": tenant_id, "schema": schema}
    return tenants


def create_tenants(roster, slugs, jobs):
    """Creates tenants with the CLI, `jobs` at a time; returns the seconds it took."""

    def create(slug):
        done = subprocess.run(
            [roster, "tenant", "create", slug, "--name", f"Load test {slug}"],
            capture_output=True,
            text=True,
            check=False,
        )
        return slug, done.returncode, done.stderr.strip()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for slug, code, stderr in pool.map(create, slugs):
            if code != 0:
                fail(f"`roster tenant create {slug}` failed: {stderr[:500]}")
    return time.monotonic() - started


def new_key():
    secret = "rst_" + secrets.token_urlsafe(32)
    return secret


def key_hash(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def fresh_entry(slug, tenant_id, users, groups):
    return {
        "id": tenant_id,
        "key": new_key(),
        "groups": [
            {"id": str(uuid.uuid4()), "externalId": str(uuid.uuid4()), "name": f"Load group {g}"}
            for g in range(1, groups + 1)
        ],
        "users": [
            {"id": str(uuid.uuid4()), "email": f"seed-{u}@{slug}.load.example"}
            for u in range(1, users + 1)
        ],
    }


def key_sql(tenant_id, secret):
    return (
        f"('{uuid.uuid4()}', '{tenant_id}', '{SERVICE_ACCOUNT}', '{secret[:12]}', "
        f"decode('{key_hash(secret)}', 'hex'))"
    )


def insert_keys_sql(rows):
    if not rows:
        return ""
    return (
        "insert into roster_control.api_keys (id, tenant_id, service_account, prefix, key_hash) "
        "values\n" + ",\n".join(rows) + ";\n"
    )


def directory_sql(schema, slug, entry):
    """Groups, users and their Basic User memberships for one tenant schema, replacing any seed
    directory already there (a database seeded before this state file existed: its ids are
    unknown here, and the new rows would clash with it on names)."""
    quoted = f'"{schema}"'
    groups = ",\n".join(
        f"('{g['id']}', '{g['name']}', '{g['externalId']}', true, '{{load:read}}')"
        for g in entry["groups"]
    )
    users = ",\n".join(
        f"('{u['id']}', '{u['email']}', '{u['email']}', "
        f"'[{{\"value\": \"{u['email']}\", \"type\": \"work\", \"primary\": true}}]', "
        f"'Seed', 'User', 'scim', 'skipped')"
        for u in entry["users"]
    )
    user_ids = ", ".join(f"'{u['id']}'" for u in entry["users"])
    sql = (
        f"delete from {quoted}.users where user_name like 'seed-%@{slug}.load.example';\n"
        f"delete from {quoted}.groups where display_name like 'Load group %' "
        f"and not is_basic_user;\n"
    )
    if groups:
        sql += (
            f"insert into {quoted}.groups (id, display_name, external_id, sync_enabled, "
            f"permissions) values\n{groups}\non conflict do nothing;\n"
        )
    if users:
        sql += (
            f"insert into {quoted}.users (id, user_name, work_email, emails, given_name, "
            f"family_name, source, fusionauth_link) values\n{users}\non conflict do nothing;\n"
            f"insert into {quoted}.memberships (group_id, user_id, source) "
            f"select g.id, u.id, 'safety_net' from {quoted}.groups g "
            f"cross join unnest(array[{user_ids}]::uuid[]) as u(id) "
            f"where g.is_basic_user on conflict do nothing;\n"
        )
    return sql


def live_key_hashes(db):
    rows = psql(
        db,
        "select encode(key_hash, 'hex') from roster_control.api_keys "
        f"where service_account = '{SERVICE_ACCOUNT}' and revoked_at is null;",
    )
    return {row[0] for row in rows}


def load_state(path):
    if not os.path.exists(path):
        return {"tenants": {}}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def save_state(path, state):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def seed_directory(db, tenants, state, slugs, args):
    """Gives every tenant in `slugs` a live key, groups and users; returns what it did."""
    live = live_key_hashes(db)
    fresh, rekeyed = [], []
    for slug in slugs:
        tenant = tenants[slug]
        entry = state["tenants"].get(slug)
        if entry is None or entry["id"] != tenant["id"]:
            fresh.append(slug)
        elif key_hash(entry["key"]) not in live:
            rekeyed.append(slug)

    for slug in rekeyed:
        state["tenants"][slug]["key"] = new_key()
    for start in range(0, len(rekeyed), CHUNK):
        chunk = rekeyed[start : start + CHUNK]
        rows = [key_sql(tenants[s]["id"], state["tenants"][s]["key"]) for s in chunk]
        psql(db, "begin;\n" + insert_keys_sql(rows) + "commit;\n")
        save_state(args.state, state)

    for start in range(0, len(fresh), CHUNK):
        chunk = fresh[start : start + CHUNK]
        entries = {
            s: fresh_entry(s, tenants[s]["id"], args.users, args.groups) for s in chunk
        }
        sql = "begin;\n" + insert_keys_sql(
            [key_sql(tenants[s]["id"], e["key"]) for s, e in entries.items()]
        )
        sql += "".join(directory_sql(tenants[s]["schema"], s, e) for s, e in entries.items())
        psql(db, sql + "commit;\n")
        state["tenants"].update(entries)
        save_state(args.state, state)
    return {"fresh": len(fresh), "rekeyed": len(rekeyed)}


def connect_fusionauth(db, roster, args):
    """Connects the first load tenant with the CLI, then copies its connection to the rest."""
    first = SLUG_FORMAT.format(1)
    command = [roster, "tenant", "set-fusionauth", first, "--base-url", args.fa_url,
               "--tenant-id", args.fa_tenant]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        fail(f"`roster tenant set-fusionauth {first}` failed: {done.stderr.strip()[:500]}")
    psql(
        db,
        "update roster_control.tenants t set fusionauth_base_url = s.fusionauth_base_url, "
        "fusionauth_api_key_sealed = s.fusionauth_api_key_sealed, "
        "fusionauth_tenant_id = s.fusionauth_tenant_id, "
        "fusionauth_application_id = s.fusionauth_application_id, updated_at = now() "
        f"from roster_control.tenants s where s.slug = '{first}' "
        f"and t.slug ~ '{SLUG_PATTERN}' and t.slug <> '{first}';",
    )


def write_seed(path, slugs, state, stats):
    tenants = []
    for slug in slugs:
        entry = state["tenants"][slug]
        tenants.append(
            {
                "slug": slug,
                "key": entry["key"],
                "groups": [{"id": g["id"], "externalId": g["externalId"]} for g in entry["groups"]],
                "users": entry["users"],
            }
        )
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"stats": stats, "tenants": tenants}, f)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True, help="Postgres URL of the load database")
    parser.add_argument("--roster", required=True, help="path of the roster binary")
    parser.add_argument("--tenants", type=int, required=True)
    parser.add_argument("--users", type=int, default=20, help="existing users per new tenant")
    parser.add_argument("--groups", type=int, default=2, help="synced groups per new tenant")
    parser.add_argument("--jobs", type=int, default=4, help="tenant creates at once")
    parser.add_argument("--state", required=True, help="state file (keys; gitignored)")
    parser.add_argument("--out", required=True, help="seed file for k6")
    parser.add_argument("--fa-url", help="FusionAuth (double) base URL to connect tenants to")
    parser.add_argument("--fa-tenant", help="FusionAuth tenant id the double knows")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.tenants < 1 or args.tenants > 99_999:
        fail("--tenants must be between 1 and 99999")
    if args.groups < 1 or args.users < 1:
        fail("every tenant needs at least one group and one user")
    slugs = [SLUG_FORMAT.format(i) for i in range(1, args.tenants + 1)]

    tenants = existing_tenants(args.db)
    missing = [s for s in slugs if s not in tenants]
    create_seconds = create_tenants(args.roster, missing, args.jobs) if missing else 0.0
    if missing:
        print(
            f"seed: created {len(missing)} tenants in {create_seconds:.1f} s "
            f"({len(missing) / max(create_seconds, 1e-9):.0f}/s, {args.jobs} at a time)",
            file=sys.stderr,
        )
        tenants = existing_tenants(args.db)

    state = load_state(args.state)
    started = time.monotonic()
    done = seed_directory(args.db, tenants, state, slugs, args)
    directory_seconds = time.monotonic() - started
    if args.fa_url:
        connect_fusionauth(args.db, args.roster, args)
    stats = {
        "tenants": len(slugs),
        "created": len(missing),
        "create_seconds": round(create_seconds, 2),
        "create_jobs": args.jobs,
        "seeded_fresh": done["fresh"],
        "rekeyed": done["rekeyed"],
        "directory_seconds": round(directory_seconds, 2),
    }
    write_seed(args.out, slugs, state, stats)
    print(f"seed: {json.dumps(stats)}", file=sys.stderr)


if __name__ == "__main__":
    main()
