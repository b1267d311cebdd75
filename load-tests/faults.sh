# shellcheck shell=bash
# Variables are shared with run.sh, which sources this file (port, out, here, db, stamp, ...).
# shellcheck disable=SC2154,SC2034
# The `faults` profile of load-tests/run.sh (sourced by it; uses its helpers and settings).
#
# The Entra mix (k6/entra-cycle.js with FAULTS=1, an open workload) runs at a steady rate while
# one dependency at a time is broken on a schedule; each phase is its own k6 run, judged by
# faults_check.py:
#
#   redis       the private redis-server is SIGKILLed, then started again
#               -> no failed request, not one 503, /readyz ready again without a restart
#   postgres    the private Postgres cluster is stopped (`pg_ctl -m immediate`, a crash) and
#               started again -> only fast 503s with Retry-After, no hung request, no
#               acknowledged create or member-add lost, recovery without a restart
#   fusionauth  the FusionAuth double, behind faultproxy.py, turns slow (past Roster's per-call
#               timeout), then down, then flapping (down/up every second, answers lost after
#               the double applied them) -> 201 or 503 with Retry-After on creates only; each
#               refused create sent again as Entra would is 201; one FusionAuth user per person
#   pool        a second `roster serve` with a 2-connection pool and a 250 ms acquire timeout
#               reaches Postgres through faultproxy.py, which slows every exchange by 40 ms
#               -> 503 with Retry-After within the acquire timeout, never a hang; recovery
#
# Nothing here touches the machine's own Postgres or Redis: the profile starts its own Postgres
# cluster (initdb, data under the results folder) and its own redis-server, on ports after
# LOAD_PORT, and stops them on exit.
#
# Options (run.sh): --phase redis,postgres,fusionauth,pool (default: all, in that order)
#   --short (CI-sized: 5 tenants, 100 req/s, 74 s of load in all) and the usual --rate,
#   --tenants, --users, --groups, --batch, --no-build.

faults_phases=redis,postgres,fusionauth,pool
faults_short=0
faults_failed=0

# Bounds the verdicts hold the run to (milliseconds).
faults_hang_ms=5000        # no request may take longer: what "never a hang" means here
faults_pg_acquire_ms=2000  # ROSTER_DB_ACQUIRE_TIMEOUT_MS of the main server (the default)
faults_pool_acquire_ms=250 # ... of the pool phase's server
faults_pool_size=2

faults_ports() {
  pool_port=$((port + 3))
  fa_proxy_port=$((port + 12)) fa_control_port=$((port + 13))
  pg_proxy_port=$((port + 14)) pg_control_port=$((port + 15))
  redis_port=$((port + 20)) pg_port=$((port + 21))
}

# as_postgres CMD...: Postgres refuses to run as root; run its tools as the postgres user then.
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_bin() { find /usr/lib/postgresql -maxdepth 2 -name bin -type d | sort -V | tail -n 1; }

private_postgres_start() {
  as_postgres "$pgbin/pg_ctl" -w -D "$pgdata" -l "$out/postgres.log" \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start >/dev/null
}

private_postgres_stop() { as_postgres "$pgbin/pg_ctl" -w -D "$pgdata" -m "$1" stop >/dev/null; }

private_postgres() {
  pgbin=$(pg_bin)
  pgdata=$out/pg
  mkdir -p "$pgdata"
  touch "$out/postgres.log"
  [ "$(id -u)" != 0 ] || chown postgres "$pgdata" "$out/postgres.log"
  log "private Postgres on 127.0.0.1:$pg_port (data in $pgdata)"
  as_postgres "$pgbin/initdb" -A trust -U postgres -D "$pgdata" >"$out/initdb.log" 2>&1
  private_postgres_start
  exit_hooks+=(private_postgres_cleanup)
}

private_postgres_cleanup() {
  private_postgres_stop immediate 2>/dev/null || true
  rm -rf "$pgdata"
}

private_redis() {
  start redis redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no
  wait_tcp "$redis_port" redis
}

# fault_event PHASE EVENT [,"json":"fields"]: one line of the phase's event log.
fault_event() {
  printf '{"t":%s,"event":"%s"%s}\n' "$(now)" "$2" "${3:-}" >>"$out/events-$1.jsonl"
  log "$1: $2${3:+ $3}"
}

# await_ready PHASE URL PIDFILE: polls /readyz (up to 30 s) and records how long it took to say ready
# with Redis healthy, and that the server process is still the one started before the phase.
await_ready() {
  local phase=$1 url=$2 pidfile=$3 started body ok=false
  started=$(now)
  for _ in $(seq 1 300); do
    body=$(curl -fsS "$url/readyz" 2>/dev/null) || body=
    if printf '%s' "$body" | grep -q '"redis": *"healthy"'; then
      ok=true
      break
    fi
    sleep 0.1
  done
  fault_event "$phase" ready ",\"ok\":$ok,\"secs\":$(awk "BEGIN{print $(now) - $started}")"
  [ "$(cat "$pidfile")" = "$phase_server_pid" ] || fault_event "$phase" server_pid_changed
}

# readyz_says PHASE URL: records what /readyz answers now (during a fault); it answers JSON.
readyz_says() {
  local body
  body=$(curl -sS --max-time 5 "$2/readyz" 2>/dev/null | tr -d '\n') || body=
  fault_event "$1" readyz ",\"readyz\":${body:-null}"
}

proxy_mode() { curl -fsS "http://127.0.0.1:$1/mode?set=$2" >/dev/null; }

# --- The phases: each sets a schedule (seconds into the k6 run) ----------------------------
phase_redis() {
  local url=$1 kill_at=8 outage=8
  [ "$faults_short" = 0 ] || kill_at=4 outage=5
  sleep "$kill_at"
  local pid
  pid=$(cat "$out/redis.pid")
  kill -KILL "$pid"
  { wait "$pid" || true; } 2>/dev/null # reaped here, so bash prints no "Killed" line
  fault_event redis fault_started ',"what":"redis-server SIGKILLed"'
  sleep 2
  readyz_says redis "$url"
  sleep $((outage - 2))
  private_redis
  fault_event redis fault_cleared ',"what":"redis-server started again"'
  await_ready redis "$url" "$out/server.pid"
}

phase_postgres() {
  local url=$1 stop_at=10 outage=8
  [ "$faults_short" = 0 ] || stop_at=4 outage=5
  sleep "$stop_at"
  private_postgres_stop immediate
  fault_event postgres fault_started ',"what":"pg_ctl stop -m immediate"'
  sleep 2
  readyz_says postgres "$url"
  sleep $((outage - 2))
  private_postgres_start
  fault_event postgres fault_cleared ',"what":"pg_ctl start"'
  await_ready postgres "$url" "$out/server.pid"
}

phase_fusionauth() {
  local url=$1 step=10 gap=3
  [ "$faults_short" = 0 ] || step=6 gap=2
  sleep "$gap"
  proxy_mode "$fa_control_port" 'slow&delay_ms=1500'
  fault_event fusionauth fault_started ',"what":"slow: every request 1.5 s late"'
  sleep "$step"
  proxy_mode "$fa_control_port" pass
  sleep "$gap"
  proxy_mode "$fa_control_port" down
  fault_event fusionauth fault_started ',"what":"down: connections refused"'
  sleep "$step"
  proxy_mode "$fa_control_port" pass
  sleep "$gap"
  proxy_mode "$fa_control_port" 'flap&period_ms=1000&drop=0.25'
  fault_event fusionauth fault_started ',"what":"flapping: down/up every 1 s, 25% of answers lost"'
  sleep "$step"
  proxy_mode "$fa_control_port" pass
  fault_event fusionauth fault_cleared ',"what":"FusionAuth answers normally"'
  await_ready fusionauth "$url" "$out/server.pid"
}

phase_pool() {
  local url=$1 start_at=5 starve=15
  [ "$faults_short" = 0 ] || start_at=3 starve=7
  sleep "$start_at"
  proxy_mode "$pg_control_port" 'slow&delay_ms=40'
  fault_event pool fault_started ",\"what\":\"every Postgres exchange 40 ms late; pool of $faults_pool_size\""
  sleep "$starve"
  proxy_mode "$pg_control_port" pass
  fault_event pool fault_cleared ',"what":"Postgres at full speed"'
  await_ready pool "$url" "$out/server_pool.pid"
}

# phase_seconds PHASE: how long the phase's k6 run lasts.
phase_seconds() {
  case $faults_short:$1 in
    0:redis) echo 30 ;;
    0:postgres) echo 35 ;;
    0:fusionauth) echo 50 ;;
    0:pool) echo 35 ;;
    1:redis) echo 14 ;;
    1:postgres) echo 16 ;;
    1:fusionauth) echo 28 ;;
    1:pool) echo 16 ;;
  esac
}

# run_phase PHASE: the phase's k6 run with its schedule alongside, then its verdict.
run_phase() {
  local phase=$1 url=http://127.0.0.1:$port server=server secs
  if [ "$phase" = pool ]; then
    url=http://127.0.0.1:$pool_port server=server_pool
    start_pool_server
  fi
  phase_server_pid=$(cat "$out/$server.pid")
  secs=$(phase_seconds "$phase")
  local label=faults-$phase
  # shellcheck disable=SC2046
  k6_start "$label" "$here/k6/entra-cycle.js" $(entra_env "$out/seed.json" "$url") \
    DURATION="${secs}s" FAULTS=1 REQUEST_TIMEOUT=30s VU_SECONDS=2.5 K6_LOG_FORMAT=raw \
    K6_CONSOLE_OUTPUT="$out/writes-$phase.jsonl"
  "phase_$phase" "$url"
  k6_finish
  [ "$phase" != pool ] || stop_pool_server

  local fast=$((faults_pg_acquire_ms + 1000))
  [ "$phase" != pool ] || fast=$((faults_pool_acquire_ms + 1000))
  python3 "$here/faults_check.py" --phase "$phase" --export "$out/k6-$label.json" \
    --writes "$out/writes-$phase.jsonl" --events "$out/events-$phase.jsonl" --db "$pg/$db" \
    --run-id "$stamp-$label" --seed "$out/seed.json" --base "http://127.0.0.1:$port" \
    --double "http://127.0.0.1:$fa_port" --fa-tenant "$fa_tenant" \
    --hang-ms "$faults_hang_ms" --fast-ms "$fast" --out "$out/faults.json" ||
    faults_failed=1
}

start_pool_server() {
  start pg_proxy python3 "$here/faultproxy.py" --listen "127.0.0.1:$pg_proxy_port" \
    --upstream "127.0.0.1:$pg_port" --control "127.0.0.1:$pg_control_port" \
    --events "$out/events-pool-proxy.jsonl"
  wait_tcp "$pg_proxy_port" pg_proxy
  ROSTER_DATABASE_URL=postgres://postgres@127.0.0.1:$pg_proxy_port/$db \
    ROSTER_DB_MAX_CONNECTIONS=$faults_pool_size \
    ROSTER_DB_ACQUIRE_TIMEOUT_MS=$faults_pool_acquire_ms \
    start_server server_pool "$pool_port"
}

stop_pool_server() {
  local name
  for name in server_pool pg_proxy; do
    kill -TERM "$(cat "$out/$name.pid")" 2>/dev/null || true
    wait "$(cat "$out/$name.pid")" 2>/dev/null || true
  done
}

profile_faults() {
  faults_ports
  private_postgres
  pg=postgres://postgres@127.0.0.1:$pg_port
  export ROSTER_DATABASE_URL=$pg/$db
  private_redis
  export ROSTER_REDIS_URL=redis://127.0.0.1:$redis_port
  export ROSTER_DB_ACQUIRE_TIMEOUT_MS=$faults_pg_acquire_ms
  # FusionAuth's budget as the tests set it: each call may take 1.2 s, a create 3 s in all.
  export ROSTER_FUSIONAUTH_TIMEOUT_MS=3000

  start_double
  start fa_proxy python3 "$here/faultproxy.py" --listen "127.0.0.1:$fa_proxy_port" \
    --upstream "127.0.0.1:$fa_port" --control "127.0.0.1:$fa_control_port" \
    --events "$out/events-fusionauth-proxy.jsonl"
  wait_tcp "$fa_proxy_port" fa_proxy
  fa_url=http://127.0.0.1:$fa_proxy_port
  seed
  start_server server "$port"
  start_sampler server double

  local phase
  for phase in ${faults_phases//,/ }; do
    run_phase "$phase"
  done
  extra+=(--extra "faults=$out/faults.json")
}
