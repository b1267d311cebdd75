#!/usr/bin/env bash
# scim2-tester against a live `roster serve`: discovery, the random-URL 404, and user create and
# read must all pass. Expects the services up and the debug binary built (bash .ci/test does
# both).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/venv-scim
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import scim2_tester' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'scim2-tester==0.5.2' 'scim2-cli==0.6.0'
fi

roster=target/debug/roster
[ -x "$roster" ] || cargo build -q --bin roster
export ROSTER_DATABASE_URL=${ROSTER_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/roster_conformance}
"$roster" migrate >/dev/null

slug="conformance-$(date +%s)-$RANDOM"
"$roster" tenant create "$slug" --name "scim2-tester" >/dev/null
key=$("$roster" key issue "$slug" --name scim2-tester 2>/dev/null | tail -n 1)

port=18479
ROSTER_LISTEN=127.0.0.1:$port ROSTER_LOG=warn "$roster" serve &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.2
done

"$venv/bin/python" .ci/scim_conformance.py "http://127.0.0.1:$port/scim/v2/$slug" "$key"
