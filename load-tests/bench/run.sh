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

base="http://127.0.0.1:$port/scim/v2/$slug"
match="$base/Users?filter=emails%5Btype+eq+%22work%22%5D.value+eq+%22user4242%40contoso.com%22"
auth="Authorization: Bearer $key"
curl -fsS -H "$auth" "$match" | grep -q '"totalResults":1' || { echo "match query finds nothing"; exit 1; }

echo "== spc: wrk -t2 -c$connections -d${duration}s --latency ServiceProviderConfig"
wrk -t2 -c"$connections" -d"${duration}s" --latency -H "$auth" "$base/ServiceProviderConfig"
echo "== match: wrk -t2 -c$connections -d${duration}s --latency (100,000 users)"
wrk -t2 -c"$connections" -d"${duration}s" --latency -H "$auth" "$match"

echo "== query plan of the match query"
psql -h 127.0.0.1 -U postgres roster_bench -c "set search_path to \"$schema\"; explain analyze
  select id, user_name from users where lower(work_email) = lower('user4242@contoso.com')
  order by created_at, id limit 100"

echo "== pgbench: the same indexed lookup, $connections clients"
cat > /tmp/roster-match.pgbench <<SQL
\set n random(1, 100000)
select id, user_name, work_email, emails from "$schema".users where lower(work_email) = lower('user' || :n || '@contoso.com');
SQL
pgbench -n -h 127.0.0.1 -U postgres -c "$connections" -j 2 -T "$duration" -M prepared \
  -f /tmp/roster-match.pgbench roster_bench | grep -E 'tps|latency'
