#!/usr/bin/env bash
# The long chaos run (nightly): every scenario, a fresh random seed per round, release builds.
# Usage: chaos/soak.sh [ROUNDS] [ITERATIONS]   (ITERATIONS: per scenario; default each scenario's own)
# Output: soak-<date>/round-<n>.jsonl (one JSON object per iteration) and the work directories of
# failed iterations; exits 1 if any guarantee broke. See docs/failure-modes.md.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
iterations=${2:-}
cargo build --release -p feral-memory --bin feral-node
cargo build --release -p feral-chaos --bin feral-chaos
out=${FERAL_SOAK_OUT:-soak-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
failed=0
for round in $(seq 1 "$rounds"); do
    seed=$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')
    args=(all --json --seed "$seed" --work "$out/work-$round")
    if [ -n "$iterations" ]; then args+=(--iterations "$iterations"); fi
    if target/release/feral-chaos "${args[@]}" > "$out/round-$round.jsonl"; then
        echo "round $round (seed $seed): every guarantee held"
    else
        failed=1
        echo "round $round (seed $seed): GUARANTEES BROKEN; see $out/round-$round.jsonl"
    fi
done
total=$(cat "$out"/round-*.jsonl | wc -l)
broken=$(cat "$out"/round-*.jsonl | grep -c '"held":false' || true)
echo "soak: $rounds rounds, $total iterations, $broken broken; results in $out"
exit "$failed"
