#!/usr/bin/env bash
# Raw gRPC probes of Lease and Watch, the same requests to etcd 3.4 (one
# member) and to a bftd demo, each in a private network/PID namespace
# (root). Needs the aetcd venv that scripts/client-suites.sh made.
#   perf/results/2026-12-07/client-suites-probe/run.sh  # prints the diffs;
# the full outputs stay in the temporary directory it names.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
target=${CARGO_TARGET_DIR:-$here/../../../../target}
py=$target/client-suites/venv-aetcd/bin/python
if [ "${1:-}" = "--inner" ]; then
    ip link set lo up
    tmp=$(mktemp -d)
    if [ "$2" = bftd ]; then
        "$target/release/bftd" demo --data-dir "$tmp/d" >"$tmp/server.log" 2>&1 &
    else
        etcd --name e0 --data-dir "$tmp/e" --listen-client-urls http://127.0.0.1:2379 \
            --advertise-client-urls http://127.0.0.1:2379 >"$tmp/server.log" 2>&1 &
    fi
    server=$!
    trap 'kill -TERM $server; wait $server 2>/dev/null || true; rm -rf "$tmp"' EXIT
    for _ in $(seq 120); do
        etcdctl --endpoints=127.0.0.1:2379 --command-timeout=2s put ready 1 >/dev/null 2>&1 && break
        sleep 0.5
    done
    for p in probe halfclose; do
        timeout 120 "$py" -W ignore "$here/$p.py" 127.0.0.1:2379 >"$3/$p-$2.txt" 2>"$3/$p-$2.err" || true
    done
    exit 0
fi
out=$(mktemp -d)
for s in etcd bftd; do
    unshare --net --pid --fork --mount-proc --kill-child=SIGTERM bash "$0" --inner "$s" "$out" || echo "probe against $s failed" >&2
done
for p in probe halfclose; do
    echo "== $p: etcd (<) vs bftd (>)"
    diff "$out/$p-etcd.txt" "$out/$p-bftd.txt" | cut -c1-220 || true
done
echo "outputs in $out"
