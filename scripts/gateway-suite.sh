#!/usr/bin/env bash
# Opt-in: runs etcd3gw's public integration tests (etcd3gw/tests/test_etcd3gw.py
# from its PyPI sdist; etcd3gw is the JSON-gateway client OpenStack's tooz
# uses) against etcd 3.4's JSON gateway and against bftd's, then prints
# passed/failed for both and the tests that fail only on bftd. Then, on each
# server, scripts/patroni-smoke.py: Patroni's own etcd3 client through the
# calls of its HA loop (no PostgreSQL needed).
#
#   ./scripts/gateway-suite.sh            # both servers
#   ./scripts/gateway-suite.sh bftd       # one server only (bftd | etcd)
#
# The tests find the server through TOOZ_TEST_HTTP_URL and
# TOOZ_TEST_ETCD_PORT (host localhost); each server gets a fresh data
# directory on loopback port GATEWAY_SUITE_PORT (default 11379; bftd's demo
# also takes the ports +10000.. and +20000.. above it). Processes are
# stopped by PID. No root needed.
#
# Environment: GATEWAY_SUITE_PORT, GATEWAY_SUITE_TEST_TIMEOUT_S (per test,
# default 60), CARGO_TARGET_DIR, BFTD_BIN (a bftd binary instead of
# building target/release/bftd). The venv and sdist are cached in
# $CARGO_TARGET_DIR/gateway-suite; JUnit XML and logs of the last run in
# $CARGO_TARGET_DIR/gateway-suite/last.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
work=$target/gateway-suite
port=${GATEWAY_SUITE_PORT:-11379}
test_timeout_s=${GATEWAY_SUITE_TEST_TIMEOUT_S:-60}
endpoint=http://127.0.0.1:$port

# Pinned: etcd3gw 2.7.0 and its test requirements (oslotest), run with
# pytest; Patroni 4.1.5 with the modules its etcd3 DCS imports.
PINS=(etcd3gw==2.7.0 requests==2.34.2 urllib3==2.8.0 futurist==3.5.0 pbr==7.1.3
    certifi==2026.10.19.post1 charset-normalizer==3.5.3 idna==3.21 debtcollector==3.1.0
    oslotest==6.1.1 fixtures==4.3.2 testtools==2.9.1 wrapt==2.5.2 pytest==9.2.0
    pytest-timeout==2.4.0 iniconfig==2.3.1 packaging==26.4 pluggy==1.7.0 Pygments==2.21.0
    patroni==4.1.5 python-etcd==0.4.5 psycopg2-binary==2.9.13)
SRC=etcd3gw-2.7.0

if [ $# -gt 0 ]; then servers=("$@"); else servers=(etcd bftd); fi
for s in "${servers[@]}"; do
    case $s in bftd | etcd) ;; *)
        echo "usage: scripts/gateway-suite.sh [bftd|etcd]..." >&2
        exit 2
        ;;
    esac
done

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

mkdir -p "$work"
venv=$work/venv
stamp=$(printf '%s\n' "${PINS[@]}" | sha256sum | cut -c1-16)
if [ "$(cat "$venv/.pins" 2>/dev/null)" != "$stamp" ]; then
    echo "== installing etcd3gw and its test requirements (cached in $work)"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
    echo "$stamp" >"$venv/.pins"
fi
if [ ! -f "$work/$SRC/etcd3gw/tests/test_etcd3gw.py" ]; then
    "$venv/bin/python" -m pip download -q --disable-pip-version-check \
        --no-deps --no-binary :all: -d "$work" etcd3gw==2.7.0
    tar xzf "$work/$SRC.tar.gz" -C "$work"
fi

if [[ " ${servers[*]} " == *" bftd "* ]] && [ -z "${BFTD_BIN:-}" ]; then
    echo "== building bftd (release)"
    CARGO_TARGET_DIR=$target cargo build -q --release --locked -p bftd
fi

out=$work/last
mkdir -p "$out"
pids=()
tmp=$(mktemp -d /tmp/gateway-suite.XXXXXX)
stop_servers() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    pids=()
}
trap 'stop_servers; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

for server in "${servers[@]}"; do
    rm -f "$out/$server".*
    case $server in
    etcd)
        # One member, as the suite's upstream CI (pifpaf) runs it.
        etcd --name gw0 --data-dir "$tmp/etcd" \
            --listen-client-urls "$endpoint" --advertise-client-urls "$endpoint" \
            --listen-peer-urls "http://127.0.0.1:$((port + 1))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
            --initial-cluster "gw0=http://127.0.0.1:$((port + 1))" >"$out/$server.server.log" 2>&1 &
        pids+=($!)
        ;;
    bftd)
        "${BFTD_BIN:-$target/release/bftd}" demo --base-port "$port" --data-dir "$tmp/bftd" \
            >"$out/$server.server.log" 2>&1 &
        pids+=($!)
        ;;
    esac
    deadline=$((SECONDS + 60))
    until curl -sf -X POST "$endpoint/v3/kv/put" -d '{"key":"cmVhZHk=","value":"MQ=="}' >/dev/null; do
        if [ $SECONDS -gt $deadline ]; then
            echo "$server did not serve the gateway on $endpoint within 60 s; see $out/$server.server.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    curl -sf -X POST "$endpoint/v3/kv/deleterange" -d '{"key":"cmVhZHk="}' >/dev/null
    echo "== etcd3gw's integration tests against $server ($endpoint)"
    (cd "$work/$SRC" &&
        TOOZ_TEST_HTTP_URL=$endpoint TOOZ_TEST_ETCD_PORT=$port \
            timeout -k 10 1200 "$venv/bin/python" -m pytest etcd3gw/tests/test_etcd3gw.py \
            -p no:cacheprovider --timeout="$test_timeout_s" -rfE \
            --junitxml="$out/$server.xml" >"$out/$server.log" 2>&1) || true
    echo "   $(tail -n 1 "$out/$server.log")"
    echo "== Patroni's etcd3 DCS against $server"
    timeout -k 10 300 "$venv/bin/python" "$repo/scripts/patroni-smoke.py" "127.0.0.1:$port" \
        >"$out/$server.patroni.log" 2>&1 || true
    echo "   $(tail -n 1 "$out/$server.patroni.log")"
    stop_servers
    rm -rf "${tmp:?}"/*
done

"$venv/bin/python" - "$out" <<'PY'
import os, sys
import xml.etree.ElementTree as ET

out = sys.argv[1]
results = {}
for server in ("etcd", "bftd"):
    path = os.path.join(out, f"{server}.xml")
    if not os.path.exists(path):
        continue
    tests = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, msg = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                msg = ((el.get("message") or "").splitlines() or [""])[0][:160]
                break
        tests[case.get("name")] = (outcome, msg)
    results[server] = tests
print()
print("| server | tests | passed | failed | errors | skipped |")
print("|---|---|---|---|---|---|")
for server, t in results.items():
    c = {k: sum(1 for o, _ in t.values() if o == k) for k in ("passed", "failed", "error", "skipped")}
    print(f"| {server} | {len(t)} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} |")
e, b = results.get("etcd"), results.get("bftd")
if e is not None and b is not None:
    only = [(n, o, m) for n, (o, m) in sorted(b.items())
            if o in ("failed", "error") and e.get(n, ("",))[0] == "passed"]
    print(f"\nfailing on bftd, passing on etcd: {len(only)}")
    for n, o, m in only:
        print(f"  {n}  [{o}] {m}")
print(f"\nJUnit XML and logs: {out}")
PY
