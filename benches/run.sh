#!/usr/bin/env bash
# Runs every benchmark and writes a markdown table of results and ratios (engine beside raw
# probes and SQLite) to benches/results.md. Usage: benches/run.sh [--quick]
#   --quick: 100,000-op stores and one-second measurements (a few minutes on 2 cores).
#   Full: 1,000,000-op stores and the measurement times in the benches (about an hour).
# Run on an idle machine: other load lands in the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full
if [ "${1:-}" = "--quick" ]; then
    mode=quick
    export FERAL_BENCH_QUICK=1 FERAL_BENCH_OPS=${FERAL_BENCH_OPS:-100000} FERAL_BENCH_SYNC_OPS=${FERAL_BENCH_SYNC_OPS:-100000}
fi
cargo build --release -p feral-memory --bin feral-node
cargo build --release -p feral-benches --bin bench-table
cargo bench -p feral-benches --no-run
rm -rf target/criterion
started=$(date +%s)
cargo bench -p feral-benches --benches -- --noplot 2>&1 | grep -E "^(built|peak RSS|SKIPPED|latency|index size|[a-z_0-9]+/.*time:)|time:" || true
out=benches/results.md
{
    echo "# Benchmark results"
    echo
    echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(uname -r); mode: $mode; took $(( $(date +%s) - started )) s."
    echo
    target/release/bench-table target
} > "$out"
cat "$out"
