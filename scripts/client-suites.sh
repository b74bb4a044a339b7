#!/usr/bin/env bash
# Opt-in: runs the public test suites of two third-party etcd client libraries
# (python-etcd3 and aetcd, the tests shipped in their PyPI sdists) against a
# bftd demo cluster and against etcd 3.4, then prints a side-by-side summary
# and the tests that fail on bftd but pass on etcd.
#
#   ./scripts/client-suites.sh            # both servers, both suites
#   ./scripts/client-suites.sh bftd       # one server only (bftd | etcd)
#
# Each server runs with its suites inside a private network and PID
# namespace (unshare, needs root): both servers listen on 127.0.0.1:2379 as
# the suites' hard-coded defaults expect, nothing touches another cluster on
# this machine, and the suites' `pgrep ... | kill -STOP` only sees this run's
# processes. etcd runs as the suites' upstream CI runs it (pifpaf): three
# members named pifpaf0..2, data in a temporary directory.
#
# Environment: CLIENT_SUITES_TEST_TIMEOUT_S (per test, default 60),
# CLIENT_SUITES_RUN_TIMEOUT_S (per suite run, default 1200), CARGO_TARGET_DIR,
# BFTD_BIN (a bftd binary to use instead of building target/release/bftd).
# Venvs and sdists are cached in $CARGO_TARGET_DIR/client-suites; the JUnit
# XML and logs of the last run are kept in $CARGO_TARGET_DIR/client-suites/last.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
work=$target/client-suites
test_timeout_s=${CLIENT_SUITES_TEST_TIMEOUT_S:-60}
run_timeout_s=${CLIENT_SUITES_RUN_TIMEOUT_S:-1200}

# Pinned versions: the suites' own pins where they still install on a
# current Python, else the nearest that do. python-etcd3 0.12.0 needs its own
# tenacity 6.1 (its lock calls wait functions the old way) and hypothesis 4
# (newer ones refuse its function-scoped fixtures), and protobuf 3.x for its
# generated code; aetcd 1.0.0's code was generated for protobuf 5.27.
ETCD3_PINS=(etcd3==0.12.0 grpcio==1.75.1 protobuf==3.20.3 six==1.17.0 tenacity==6.1.0
    pytest==9.0.3 pytest-timeout==2.4.0 hypothesis==4.56.3 mock==5.2.0 attrs==26.1.0
    sortedcontainers==2.4.0 iniconfig==2.3.1 packaging==26.4 pluggy==1.7.0 Pygments==2.21.0
    typing_extensions==4.16.0)
AETCD_PINS=(aetcd==1.0.0 grpcio==1.75.1 protobuf==5.27.2 pytest==9.0.3 pytest-asyncio==1.3.0
    pytest-mock==3.15.1 pytest-timeout==2.4.0 iniconfig==2.3.1 packaging==26.4 pluggy==1.7.0
    Pygments==2.21.0 typing_extensions==4.16.0)
ETCD3_SRC=etcd3-0.12.0
AETCD_SRC=aetcd-1.0.0
# The suites' endpoint variables (python-etcd3: PYTHON_ETCD_HTTP_URL, aetcd:
# TEST_ETCD_HTTP_URL, both as pifpaf sets them); also what etcdctl uses.
ENDPOINT=http://127.0.0.1:2379

# ---------------------------------------------------------------------------
# Inner mode: inside the namespaces, start one server, run one suite, stop.
# Each suite gets a fresh cluster: the suites leave state behind (e.g.
# python-etcd3's auth test leaves its root user).
# ---------------------------------------------------------------------------
if [ "${1:-}" = "--inner" ]; then
    server=$2
    suite=$3
    out=$4
    tmp=$5/$server-$suite
    mkdir -p "$tmp"
    ip link set lo up
    pids=()
    cleanup() {
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for p in "${pids[@]}"; do
            for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$p" 2>/dev/null || true
            wait "$p" 2>/dev/null || true
        done
        rm -rf "$tmp"
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM

    case $server in
    bftd)
        "${BFTD_BIN:-$target/release/bftd}" demo --data-dir "$tmp/bftd" >"$out/server-$suite-bftd.log" 2>&1 &
        pids+=($!)
        ;;
    etcd)
        cluster=pifpaf0=http://127.0.0.1:2380,pifpaf1=http://127.0.0.1:2382,pifpaf2=http://127.0.0.1:2384
        for i in 0 1 2; do
            cport=$((2379 + 2 * i))
            pport=$((2380 + 2 * i))
            etcd --name "pifpaf$i" --data-dir "$tmp/etcd$i" \
                --listen-client-urls "http://127.0.0.1:$cport" \
                --advertise-client-urls "http://127.0.0.1:$cport" \
                --listen-peer-urls "http://127.0.0.1:$pport" \
                --initial-advertise-peer-urls "http://127.0.0.1:$pport" \
                --initial-cluster "$cluster" --initial-cluster-state new \
                --initial-cluster-token client-suites >"$out/server-$suite-etcd$i.log" 2>&1 &
            pids+=($!)
        done
        ;;
    *)
        echo "unknown server $server" >&2
        exit 2
        ;;
    esac
    deadline=$((SECONDS + 60))
    until ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINT --command-timeout=2s put client-suites-ready 1 >/dev/null 2>&1 &&
        ETCDCTL_API=3 etcdctl --endpoints=$ENDPOINT --command-timeout=2s del client-suites-ready >/dev/null 2>&1; do
        if [ $SECONDS -gt $deadline ]; then
            echo "$server did not serve writes on $ENDPOINT within 60 s; see $out/server-*.log" >&2
            exit 1
        fi
        sleep 0.5
    done
    echo "== $suite against $server (serving on $ENDPOINT)"

    case $suite in
    python-etcd3)
        # PYTHONPATH: test_user_pwd_auth patches the top-level module `etcdrpc`.
        (cd "$work/src/$ETCD3_SRC" &&
            PYTHONPATH=etcd3 PYTHON_ETCD_HTTP_URL=$ENDPOINT TEST_ETCD_VERSION=v3.4.23 \
                exec timeout -k 10 "$run_timeout_s" "$work/venv-etcd3/bin/python" -m pytest tests \
                -p no:cacheprovider --timeout="$test_timeout_s" -rfE \
                --junitxml="$out/$suite-$server.xml" >"$out/$suite-$server.log" 2>&1) &
        ;;
    aetcd)
        (cd "$work/src/$AETCD_SRC" &&
            TEST_ETCD_HTTP_URL=$ENDPOINT \
                exec timeout -k 10 "$run_timeout_s" "$work/venv-aetcd/bin/python" -m pytest tests \
                --with-cluster -o addopts= -p no:cacheprovider --timeout="$test_timeout_s" -rfE \
                --junitxml="$out/$suite-$server.xml" >"$out/$suite-$server.log" 2>&1) &
        ;;
    esac
    # In the background so that a TERM is handled at once: this shell is the
    # namespace's PID 1, and when it exits the kernel kills what is left.
    pids+=($!)
    wait "$!" || true
    echo "   $(tail -n 1 "$out/$suite-$server.log")"
    exit 0
fi

# ---------------------------------------------------------------------------
# Outer mode: install, build, run each server in its own namespaces, compare.
# ---------------------------------------------------------------------------
if [ $# -gt 0 ]; then servers=("$@"); else servers=(etcd bftd); fi
for s in "${servers[@]}"; do
    case $s in bftd | etcd) ;; *)
        echo "usage: scripts/client-suites.sh [bftd|etcd]..." >&2
        exit 2
        ;;
    esac
done

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v pgrep >/dev/null 2>&1 || need+=(procps) # the suites SIGSTOP etcd members with it
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! unshare --net --pid --fork --mount-proc true 2>/dev/null; then
    echo "unshare --net --pid failed: this script needs root (a private loopback per server)" >&2
    exit 1
fi

mkdir -p "$work/src"
make_venv() { # name, pins...
    local dir=$work/venv-$1
    shift
    local stamp
    stamp=$(printf '%s\n' "$@" | sha256sum | cut -c1-16)
    if [ "$(cat "$dir/.pins" 2>/dev/null)" != "$stamp" ]; then
        rm -rf "$dir"
        python3 -m venv "$dir"
        "$dir/bin/python" -m pip install -q --disable-pip-version-check "$@"
        echo "$stamp" >"$dir/.pins"
    fi
}
fetch_sdist() { # requirement, directory
    if [ ! -d "$work/src/$2/tests" ]; then
        "$work/venv-etcd3/bin/python" -m pip download -q --disable-pip-version-check \
            --no-deps --no-binary :all: -d "$work/src" "$1"
        tar xzf "$work/src/$2.tar.gz" -C "$work/src"
    fi
}
echo "== installing the suites (cached in $work)"
make_venv etcd3 "${ETCD3_PINS[@]}"
make_venv aetcd "${AETCD_PINS[@]}"
fetch_sdist etcd3==0.12.0 "$ETCD3_SRC"
fetch_sdist aetcd==1.0.0 "$AETCD_SRC"

if [[ " ${servers[*]} " == *" bftd "* ]] && [ -z "${BFTD_BIN:-}" ]; then
    echo "== building bftd (release)"
    CARGO_TARGET_DIR=$target cargo build -q --release --locked -p bftd
fi

out=$work/last
mkdir -p "$out"
for s in "${servers[@]}"; do rm -f "$out"/*-"$s".xml "$out"/*-"$s".log "$out"/server-*-"$s"*.log; done
runtmp=$(mktemp -d /tmp/client-suites.XXXXXX)
child=""
# unshare ignores TERM while it waits: stop the inner shell (the namespace's
# PID 1, which stops its server and pytest), SIGKILL it if it lingers (the
# kernel then kills the whole namespace), and remove the data directories.
stop_child() {
    if [ -n "$child" ]; then
        local inner
        inner=$(pgrep -P "$child" || true)
        [ -z "$inner" ] || kill -TERM $inner 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
        [ -z "$inner" ] || kill -KILL $inner 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    rm -rf "$runtmp"
}
trap stop_child EXIT
trap 'exit 130' INT TERM
for s in "${servers[@]}"; do
    for suite in python-etcd3 aetcd; do
        unshare --net --pid --fork --mount-proc --kill-child=SIGTERM \
            env CARGO_TARGET_DIR="$target" BFTD_BIN="${BFTD_BIN:-}" \
            bash "$repo/scripts/client-suites.sh" --inner "$s" "$suite" "$out" "$runtmp" &
        child=$!
        wait "$child" || echo "$suite against $s failed (exit $?); see $out" >&2
        child=""
    done
done

"$work/venv-etcd3/bin/python" - "$out" <<'EOF'
import glob, os, sys
import xml.etree.ElementTree as ET

out = sys.argv[1]
suites = ["python-etcd3", "aetcd"]
servers = ["etcd", "bftd"]
results = {}  # (suite, server) -> {test: (outcome, message)}
for suite in suites:
    for server in servers:
        path = os.path.join(out, f"{suite}-{server}.xml")
        if not os.path.exists(path):
            continue
        tests = {}
        for case in ET.parse(path).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            outcome, msg = "passed", ""
            for tag in ("failure", "error", "skipped"):
                el = case.find(tag)
                if el is not None:
                    outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                    msg = (el.get("message") or "").splitlines()[0:1]
                    msg = msg[0][:160] if msg else ""
                    break
            tests[name] = (outcome, msg)
        results[(suite, server)] = tests

def counts(tests):
    c = {"passed": 0, "failed": 0, "error": 0, "skipped": 0}
    for outcome, _ in tests.values():
        c[outcome] += 1
    return c

print()
print("| suite | server | tests | passed | failed | errors | skipped |")
print("|---|---|---|---|---|---|---|")
for suite in suites:
    for server in servers:
        t = results.get((suite, server))
        if t is None:
            print(f"| {suite} | {server} | not run | | | | |")
            continue
        c = counts(t)
        print(f"| {suite} | {server} | {len(t)} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} |")

for suite in suites:
    e, b = results.get((suite, "etcd")), results.get((suite, "bftd"))
    if e is None or b is None:
        continue
    print(f"\n{suite}: failing on bftd, passing on etcd:")
    n = 0
    for name, (outcome, msg) in sorted(b.items()):
        if outcome in ("failed", "error") and e.get(name, ("",))[0] == "passed":
            print(f"  {name}  [{outcome}] {msg}")
            n += 1
    print(f"  ({n})")
    other = [name for name, (o, _) in sorted(e.items())
             if o in ("failed", "error") or (o == "passed" and name not in b)]
    if other:
        print(f"{suite}: failing on etcd (or missing on bftd): " + ", ".join(other))
print(f"\nJUnit XML and logs: {out}")
EOF
