#!/usr/bin/env bash
# Runs the mutation fuzzers of api/tests/it/fuzz.rs at scale, single-threaded, from the kept
# corpus in api/tests/corpus/. Needs no database: only the `fuzz_` tests run.
#
#   PROPTEST_CASES=200000 bash load-tests/fuzz.sh     # the figure in docs/SECURITY.md
#   bash load-tests/fuzz.sh                           # 20,000 cases per target
#
# A failure prints the minimal failing input and records its seed under
# api/tests/proptest-regressions/fuzz.txt, so the next plain `cargo test` replays it first.
set -euo pipefail
cd "$(dirname "$0")/.."

export PROPTEST_CASES="${PROPTEST_CASES:-20000}"
echo "fuzz: ${PROPTEST_CASES} cases per target"
start=$(date +%s)
cargo test --release -p api --test it -- --ignored --test-threads=1 fuzz_
echo "fuzz: $(( $(date +%s) - start )) s in total (build included)"
