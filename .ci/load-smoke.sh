#!/usr/bin/env bash
# The k6 smoke profile: every Entra operation (probe, match, create through the FusionAuth
# double, group match, member-add PATCH, re-match) against a release `roster serve` over three
# tenants for 20 seconds, with zero failed requests. Under a minute once the release build
# exists (`cargo build --release --bin roster`, which the runner does and reuses). Uses its own
# database, roster_load, and ports 18080-18091.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash load-tests/run.sh smoke "$@"
