#!/usr/bin/env bash
# Micro-benchmarks with wrk against a release `roster serve` on loopback:
#   spc    — authenticated GET /ServiceProviderConfig with a warm key cache (auth chain cost)
#   match  — Entra's match query on a tenant with 100,000 users (plus the query plan)
#   pgbench — the same indexed lookup straight against Postgres, for comparison
# Usage: load-tests/bench/run.sh [duration-seconds] [connections]   (ROSTER_BIN=… skips the build)
set -euo pipefail
cd "$(dirname "$0")/../.."
duration=${1:-10}
connections=${2:-32}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
bash .ci/services.sh >/dev/null
roster=${ROSTER_BIN:-target/release/roster}
[ -n "${ROSTER_BIN:-}" ] || cargo build -q --release --bin roster

export ROSTER_DATABASE_URL=postgres://postgres@127.0.0.1:5432/roster_bench
export ROSTER_DEFAULT_RATE_LIMIT=1000000
export ROSTER_LOG=warn
"$roster" migrate >/dev/null
slug=bench-match
"$roster" tenant create "$slug" --name "Benchmark" >/dev/null 2>&1 || true
key=$("$roster" key issue "$slug" --name bench 2>/dev/null | tail -n 1)
schema=$(psql -qAt -h 127.0.0.1 -U postgres roster_bench \
  -c "select schema_name from roster_control.tenants where slug = '$slug'")
psql -q -h 127.0.0.1 -U postgres roster_bench -v schema="$schema" -v users=100000 \
  -f load-tests/bench/match.sql >/dev/null

port=18480
ROSTER_LISTEN=127.0.0.1:$port ROSTER_DB_MAX_CONNECTIONS=16 "$roster" serve 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

# The query Roster sends for the match, for EXPLAIN and pgbench: the shape of
# api/src/directory/listing.rs with the columns of api/src/directory/users.rs.
columns="id, user_name, external_id, display_name, given_name, family_name, formatted_name, \
work_email, emails, active, source, fusionauth_user_id, fusionauth_link, created_at, updated_at"
base="http://127.0.0.1:$port/scim/v2/$slug"
match="$base/Users?filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22user4242%40contoso.com%22"
auth="Authorization: Bearer $key"
curl -fsS -H "$auth" "$match" | grep -q '"totalResults":1' || { echo "match query finds nothing"; exit 1; }

# CPU seconds (user + system) used so far by the processes PIDS (space-separated), summed, with
# the children they reaped (the postmaster reaps exited backends, such as pgbench's).
clock_ticks=$(getconf CLK_TCK)
cpu_seconds() {
  # shellcheck disable=SC2086
  [ -n "$1" ] && cat $(printf '/proc/%s/stat ' $1) 2>/dev/null |
    awk -v hz="$clock_ticks" '{ sum += $14 + $15 + $16 + $17 } END { printf "%.3f", sum / hz }' || echo 0
}
# The same for every process named NAME. The server is counted by its pid instead, since
# ROSTER_BIN may give the binary any name.
cpu_seconds_of() { cpu_seconds "$(pgrep -d ' ' -x "$1" || true)"; }
# measure NAME COMMAND...: runs a load generator and prints the CPU each process used per
# request: roster, every postgres process, redis-server, and the generator itself.
measure() {
  local name=$1 before_roster before_pg before_redis out requests generator
  shift
  before_roster=$(cpu_seconds "$server") before_pg=$(cpu_seconds_of postgres)
  before_redis=$(cpu_seconds_of redis-server)
  out=$(TIMEFORMAT='generator-cpu %U %S'; { time "$@" 2>&1; } 2>&1)
  echo "$out" | grep -v '^generator-cpu'
  generator=$(echo "$out" | awk '/^generator-cpu/ { print $2 + $3 }')
  requests=$(echo "$out" | awk '/requests in/ { print $1 }
    /number of transactions actually processed/ { print $NF }' | head -n 1 | tr -d ,)
  python3 - "$name" "$requests" "$generator" "$before_roster" "$(cpu_seconds "$server")" \
    "$before_pg" "$(cpu_seconds_of postgres)" "$before_redis" "$(cpu_seconds_of redis-server)" <<'PY2'
import sys
name, requests = sys.argv[1], int(sys.argv[2].split("/")[0])
generator, r0, r1, p0, p1, d0, d1 = map(float, sys.argv[3:])
per = lambda used: used / requests * 1e6
print(f"-- {name}: CPU per request (us): roster {per(r1 - r0):.0f}, postgres {per(p1 - p0):.0f},"
      f" redis {per(d1 - d0):.0f}, load generator {per(generator):.0f}; {requests} requests")
PY2
}

echo "== spc: wrk -t2 -c$connections -d${duration}s --latency ServiceProviderConfig"
measure spc wrk -t2 -c"$connections" -d"${duration}s" --latency -H "$auth" "$base/ServiceProviderConfig"
echo "== match: wrk -t2 -c$connections -d${duration}s --latency (100,000 users)"
measure match wrk -t2 -c"$connections" -d"${duration}s" --latency -H "$auth" "$match"

echo "== query plan of the match query"
psql -h 127.0.0.1 -U postgres roster_bench -c "explain analyze select $columns from \"$schema\".users
  where true and lower(work_email) = lower('user4242@contoso.com')"

echo "== pgbench: the same indexed lookup, $connections clients"
cat > /tmp/roster-match.pgbench <<SQL
\set n random(1, 100000)
select $columns from "$schema".users where true and lower(work_email) = lower('user' || :n || '@contoso.com');
SQL
measure pgbench pgbench -n -h 127.0.0.1 -U postgres -c "$connections" -j 2 -T "$duration" \
  -M prepared -f /tmp/roster-match.pgbench roster_bench
