#!/usr/bin/env python3
"""Judges one phase of the `faults` load profile and records its verdict.

Inputs: the phase's k6 summary export, the write log k6 kept under FAULTS=1 (one JSON line per
create, member-add PATCH, 503 and unexpected answer), the runner's fault events (when each fault
started and ended, how long `/readyz` took to recover), the load database and, for the
FusionAuth phase, Roster and the FusionAuth double themselves.

What every phase must show:
- no failed request: k6's `http_req_failed` counts every status but 2xx/3xx/503, and requests
  cut by the k6 timeout;
- no unexpected status and no 503 without `Retry-After`;
- no hung request: the slowest request under `--hang-ms`;
- nothing lost: every create answered 201 is a row of the tenant's `users`, every member-add
  answered 204 is in `memberships`;
- recovery without a restart: the server's pid did not change and `/readyz` said ready again.

And per phase:
- redis: not a single 503 (Redis is optional: Roster serves without it);
- postgres: 503s during the outage (the fault was felt), each under `--fast-ms`, none later
  than `--recover-secs` after Postgres was back;
- fusionauth: 503s only on creates; every create refused with 503 is sent again the way Entra
  retries it and must be 201 (a 409 would mean a half-stored user); afterwards every user the
  phase created is in the double under the id Roster linked, found by its email too (one
  FusionAuth user per person: no duplicate, nothing orphaned);
- pool: 503s while the pool was starved, each under `--fast-ms`, none later than
  `--recover-secs` after the starvation ended.

The verdict is merged into `--out` (a JSON object keyed by phase); the exit status is 1 when
the phase failed.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
FUSIONAUTH_KEY_ENV = "ROSTER_FUSIONAUTH_API_KEY"


def read_json(path, default=None):
    if not path or not os.path.exists(path):
        return default
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_lines(path):
    if not path or not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def psql(db, sql):
    done = subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\t", db],
        input=sql, capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        sys.exit(f"faults_check: psql failed: {done.stderr.strip()[:1000]}")
    return [line.split("\t") for line in done.stdout.splitlines() if line]


def http(method, url, headers=None, body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


# --- k6 figures -----------------------------------------------------------------------------
def metric(export, name, field, default=0):
    value = (export.get("metrics", {}).get(name) or {}).get(field)
    return default if value is None else value


def k6_figures(export):
    per_op_503 = {}
    for name, values in export.get("metrics", {}).items():
        if name.startswith("scim_503{op:"):
            per_op_503[name[len("scim_503{op:"):-1]] = values.get("count", 0)
    return {
        "requests": metric(export, "http_reqs", "count"),
        "rate_per_s": round(metric(export, "http_reqs", "rate"), 1),
        "failed_requests": metric(export, "http_req_failed", "passes"),
        "unexpected": metric(export, "scim_unexpected", "count"),
        "503": metric(export, "scim_503", "count"),
        "503_without_retry_after": metric(export, "scim_503_no_retry_after", "count"),
        "503_by_op": {op: n for op, n in sorted(per_op_503.items()) if n},
        "503_max_ms": round(metric(export, "scim_503_duration", "max"), 1),
        "p99_ms": round(metric(export, "http_req_duration", "p(99)"), 1),
        "max_ms": round(metric(export, "http_req_duration", "max"), 1),
        "dropped_iterations": metric(export, "dropped_iterations", "count"),
    }


# --- database -------------------------------------------------------------------------------
def schemas(db):
    rows = psql(db, "select slug, schema_name from roster_control.tenants where slug ~ '^load-';")
    return dict(rows)


def stored(db, schema_of, run_id):
    """The phase's users and every membership, per tenant slug."""
    users, members = {}, set()
    user_sql, member_sql = [], []
    for slug, schema in schema_of.items():
        quoted = f'"{schema}"'
        user_sql.append(
            f"select '{slug}', id, user_name, coalesce(fusionauth_user_id::text, ''), "
            f"coalesce(fusionauth_link, '') from {quoted}.users "
            f"where user_name ilike 'k6-{run_id}-%'"
        )
        member_sql.append(f"select '{slug}', group_id, user_id from {quoted}.memberships")
    if user_sql:
        for slug, uid, name, fa_id, link in psql(db, " union all ".join(user_sql) + ";"):
            users[(slug, uid)] = {"userName": name, "fusionauth_user_id": fa_id, "link": link}
        for slug, gid, uid in psql(db, " union all ".join(member_sql) + ";"):
            members.add((slug, gid, uid))
    return users, members


def journal_entries(db, schema_of, run_id):
    """The phase's journal entries by outcome, and how many of k6's requests they tell of.
    k6 sends `X-Request-Id: <run id>-<vu>-<n>`; a member-add PATCH writes one entry per member
    and a create one more for the safety net, all under the request's id."""
    if not schema_of:
        return {"entries": 0, "requests_journaled": 0, "by_outcome": {}}
    sql = " union all ".join(
        f'select request_id, outcome from "{schema}".journal '
        f"where request_id like '{run_id}-%'"
        for schema in schema_of.values()
    )
    rows = psql(db, f"select coalesce(request_id, ''), outcome from ({sql}) j;")
    by_outcome = {}
    for _, outcome in rows:
        by_outcome[outcome] = by_outcome.get(outcome, 0) + 1
    return {
        "entries": len(rows),
        "requests_journaled": len({request_id for request_id, _ in rows if request_id}),
        "by_outcome": by_outcome,
    }


def lost_writes(writes, users, members):
    created = [w for w in writes if w.get("w") == "create" and w.get("status") == 201]
    added = [w for w in writes if w.get("w") == "members" and w.get("status") == 204]
    lost_users = [w for w in created if (w["tenant"], w["id"]) not in users]
    lost_members = [
        (w["tenant"], w["group"], uid)
        for w in added
        for uid in w["ids"]
        if (w["tenant"], w["group"], uid) not in members
    ]
    return {
        "creates_acknowledged": len(created),
        "member_adds_acknowledged": len(added),
        "members_acknowledged": sum(len(w["ids"]) for w in added),
        "creates_lost": len(lost_users),
        "members_lost": len(lost_members),
        "lost_examples": [w["userName"] for w in lost_users[:5]] + lost_members[:5],
    }


# --- FusionAuth: Entra's retries and the double's users -------------------------------------
def retry_refused_creates(writes, seed, base, attempts=5):
    """Sends every create answered 503 again, as Entra does after Retry-After."""
    keys = {t["slug"]: t["key"] for t in seed["tenants"]}
    refused = [w for w in writes if w.get("w") == "create" and w.get("status") == 503]
    outcomes = {}
    for w in refused:
        body = {
            "schemas": [USER_SCHEMA],
            "userName": w["userName"],
            "active": True,
            "externalId": w["userName"].split("@")[0],
            "emails": [{"primary": True, "type": "work", "value": w["userName"]}],
            "name": {"givenName": "Load", "familyName": w["userName"].split("@")[0]},
        }
        headers = {"Authorization": f"Bearer {keys[w['tenant']]}",
                   "Content-Type": "application/scim+json"}
        status = None
        for _ in range(attempts):
            status, _ = http("POST", f"{base}/scim/v2/{w['tenant']}/Users", headers, body)
            if status != 503:
                break
            time.sleep(1)
        outcomes[str(status)] = outcomes.get(str(status), 0) + 1
    return len(refused), outcomes


def double_mismatches(users, double, fa_tenant):
    """Users whose FusionAuth account is missing, or is another one than Roster linked."""
    headers = {"Authorization": os.environ[FUSIONAUTH_KEY_ENV], "X-FusionAuth-TenantId": fa_tenant}
    wrong = []
    for (slug, uid), user in users.items():
        email = urllib.parse.quote(user["userName"], safe="")
        status, body = http("GET", f"{double}/api/user?email={email}", headers)
        found = json.loads(body).get("user", {}).get("id") if status == 200 and body else None
        if found is None or found != user["fusionauth_user_id"]:
            wrong.append({"tenant": slug, "id": uid, "status": status, "fusionauth_id": found})
    return wrong


# --- events ---------------------------------------------------------------------------------
def event_time(events, name):
    times = [e["t"] for e in events if e.get("event") == name]
    return times[-1] if times else None


def last_503_after(writes, since):
    """Seconds from `since` to the last 503 (0 when there was none after it)."""
    times = [w["ts"] / 1000 for w in writes if w.get("w") == "503"]
    later = [t for t in times if since is not None and t > since]
    return round(max(later) - since, 2) if later else 0.0


# --- verdict --------------------------------------------------------------------------------
def judge(args):
    export = read_json(args.export, {})
    writes = read_lines(args.writes)
    events = read_lines(args.events)
    figures = k6_figures(export)
    checks = {}

    checks["k6 exported a summary"] = bool(export)
    checks["no failed request"] = figures["failed_requests"] == 0
    checks["no unexpected status"] = figures["unexpected"] == 0
    checks["every 503 carries Retry-After"] = figures["503_without_retry_after"] == 0
    checks[f"no hung request (max < {args.hang_ms} ms)"] = figures["max_ms"] < args.hang_ms
    checks["server never restarted"] = not any(e.get("event") == "server_pid_changed"
                                               for e in events)
    ready = [e for e in events if e.get("event") == "ready"]
    checks["/readyz ready again without a restart"] = bool(ready) and all(e.get("ok") for e in ready)

    verdict = {"figures": figures, "events": events}
    if args.phase == "fusionauth":
        refused, retried = retry_refused_creates(writes, read_json(args.seed), args.base)
        verdict["entra_retries"] = {"sent": refused, "answers": retried}
        checks["every refused create is 201 when Entra retries it"] = (
            sum(n for s, n in retried.items() if s != "201") == 0
        )

    schema_of = schemas(args.db)
    users, members = stored(args.db, schema_of, args.run_id)
    nothing_lost = lost_writes(writes, users, members)
    verdict["writes"] = nothing_lost
    checks["no acknowledged create lost"] = nothing_lost["creates_lost"] == 0
    checks["no acknowledged member-add lost"] = nothing_lost["members_lost"] == 0
    verdict["writes"]["users_stored"] = len(users)

    # Every SCIM request leaves a journal entry; reads are written in batches off the request
    # path, so the count is taken once the run is over.
    journal = journal_entries(args.db, schema_of, args.run_id)
    verdict["journal"] = {"requests": figures["requests"], **journal}
    if args.phase in ("redis", "fusionauth"):
        checks["every request journaled"] = journal["requests_journaled"] == figures["requests"]

    fast = f"503 fast (max < {args.fast_ms} ms)"
    if args.phase == "redis":
        checks["no 503 at all"] = figures["503"] == 0
    elif args.phase in ("postgres", "pool"):
        cleared = event_time(events, "fault_cleared")
        verdict["recovery_secs_after_fault_cleared"] = last_503_after(writes, cleared)
        checks["the fault was felt (some 503)"] = figures["503"] > 0
        checks[fast] = figures["503_max_ms"] < args.fast_ms
        checks[f"no 503 later than {args.recover_secs} s after the fault cleared"] = (
            verdict["recovery_secs_after_fault_cleared"] <= args.recover_secs
        )
    elif args.phase == "fusionauth":
        ops = set(figures["503_by_op"])
        checks["the fault was felt (some 503 on creates)"] = "user_create" in ops
        checks["503 only on creates (nothing else calls FusionAuth)"] = ops <= {"user_create"}
        acknowledged = nothing_lost["creates_acknowledged"] + verdict["entra_retries"]["answers"].get("201", 0)
        checks["Roster holds exactly the users acknowledged"] = len(users) == acknowledged
        wrong = double_mismatches(users, args.double, args.fa_tenant)
        links = {}
        for user in users.values():
            links[user["link"]] = links.get(user["link"], 0) + 1
        verdict["double"] = {"users_checked": len(users), "mismatched": len(wrong),
                             "examples": wrong[:5], "links": links}
        checks["one FusionAuth user per person, the one Roster linked"] = not wrong

    verdict["checks"] = checks
    verdict["ok"] = all(checks.values())
    return verdict


def report(phase, verdict):
    f = verdict["figures"]
    print(f"[faults/{phase}] {'PASS' if verdict['ok'] else 'FAIL'}: {f['requests']} requests at "
          f"{f['rate_per_s']}/s, failed {f['failed_requests']}, unexpected {f['unexpected']}, "
          f"503 {f['503']} {f['503_by_op']} (max {f['503_max_ms']} ms), max {f['max_ms']} ms, "
          f"dropped iterations {f['dropped_iterations']}")
    w = verdict["writes"]
    print(f"    writes: {w['creates_acknowledged']} creates and {w['members_acknowledged']} "
          f"member adds acknowledged; lost {w['creates_lost']} creates, {w['members_lost']} members")
    for key in ("journal", "entra_retries", "double", "recovery_secs_after_fault_cleared"):
        if key in verdict:
            print(f"    {key}: {json.dumps(verdict[key])}")
    for name, ok in verdict["checks"].items():
        print(f"    {'ok  ' if ok else 'FAIL'} {name}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase", required=True, choices=["redis", "postgres", "fusionauth", "pool"])
    parser.add_argument("--export", required=True, help="k6 --summary-export of the phase")
    parser.add_argument("--writes", required=True, help="k6 console output (FAULTS=1)")
    parser.add_argument("--events", required=True, help="the runner's fault events (JSON lines)")
    parser.add_argument("--db", required=True, help="Postgres URL of the load database")
    parser.add_argument("--run-id", required=True, help="RUN_ID the phase's k6 run used")
    parser.add_argument("--seed", help="seed file (tenants' keys), for Entra's retries")
    parser.add_argument("--base", help="Roster base URL, for Entra's retries")
    parser.add_argument("--double", help="FusionAuth double base URL (direct, not the proxy)")
    parser.add_argument("--fa-tenant", help="FusionAuth tenant id of the double")
    parser.add_argument("--hang-ms", type=float, default=5000)
    parser.add_argument("--fast-ms", type=float, default=3000)
    parser.add_argument("--recover-secs", type=float, default=10)
    parser.add_argument("--out", required=True, help="JSON file of verdicts, keyed by phase")
    return parser.parse_args()


def main():
    args = parse_args()
    verdict = judge(args)
    verdict["bounds"] = {"hang_ms": args.hang_ms, "fast_ms": args.fast_ms,
                         "recover_secs": args.recover_secs}
    verdicts = read_json(args.out, {})
    verdicts[args.phase] = verdict
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(verdicts, f, indent=2)
    report(args.phase, verdict)
    sys.exit(0 if verdict["ok"] else 1)


if __name__ == "__main__":
    main()
