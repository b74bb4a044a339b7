#!/usr/bin/env bash
# Opt-in simulator soak: N seeds of the default profile and N of the full
# profile (f Byzantine replicas + crash-restarts of correct ones, loss,
# partitions), each profile on its own core. Prints each run's summary line
# and exits non-zero if any seed broke safety, linearizability or liveness.
#   ./scripts/sim-soak.sh 100000 [first_seed]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: scripts/sim-soak.sh SEEDS [FIRST_SEED]}
start=${2:-0}
cargo build -q --release -p sim
out=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$out"' EXIT
target/release/sim --seeds "$n" --start "$start" --profile default >"$out/default" 2>"$out/default.err" &
p1=$!
target/release/sim --seeds "$n" --start "$start" --profile full >"$out/full" 2>"$out/full.err" &
p2=$!
rc=0
wait $p1 || rc=1
wait $p2 || rc=1
for p in default full; do
    grep -v '^  [0-9]*/[0-9]* seeds' "$out/$p" | tail -n 40
done
exit $rc
