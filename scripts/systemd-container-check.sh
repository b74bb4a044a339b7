#!/usr/bin/env bash
# Opt-in check of configs/bftd@.service under a real systemd: systemd runs
# as PID 1 in a container, four replicas run in it as bftd@0..bftd@3 on
# 127.0.0.1 (the container has no network but its loopback), and the
# check shows
#   - `systemctl start` of a Type=notify unit: the replica is
#     activating until it sends READY=1, then active (running), and
#     `systemctl show -p StatusText` carries its "regency R, leader L,
#     cid C, revision V";
#   - the unit's hardening in force on the running process (seccomp
#     filter, no capabilities, no new privileges, read-only system) and
#     which kernel interface the replica links use (io_uring, or epoll
#     where io_uring is refused);
#   - etcdctl put/get across the cluster, `systemctl reload` (SIGHUP);
#   - a stalled consensus thread (fault injection) stops feeding the
#     watchdog: systemd logs "Watchdog timeout", kills the replica with
#     SIGABRT, restarts it (NRestarts + 1), it is READY again and catches
#     up with the others' last decided cid;
#   - `systemctl stop` ends every replica cleanly.
# It prints a PASS/FAIL line per check and the measured times, and exits
# non-zero on any failure. The container and the check image are removed
# on every exit.
#
# Not part of scripts/test.sh: the first run downloads a Debian root file
# system with debootstrap (about 60 MB of packages, a minute or two). It is
# cached as a tarball under the cache directory and imported as the local
# image bftd-systemd-base:<suite>-<rev>; later runs reuse either.
#
#   cargo build -p bftd
#   sudo scripts/systemd-container-check.sh                  # target/debug/bftd
#   sudo scripts/systemd-container-check.sh --binary target/release/bftd
#
# Needs: root (debootstrap, docker), docker, debootstrap (only while the
# base image is built: apt-get install debootstrap), etcdctl on the host
# (copied into the image; Debian: etcd-client). The container gets
# CAP_SYS_ADMIN (systemd mounts the units' private namespaces), a private
# cgroup namespace (without it systemd 252 does not boot on a cgroup v1
# host), tmpfs on /run and /run/lock, SIGRTMIN+3 as stop signal, and no
# docker seccomp profile, so the unit's own SystemCallFilter is the one in
# force; it has no network interface but lo. Not --privileged: it asks for
# every capability, and a dockerd without one of them (as on our build
# machine, no CAP_SYS_RESOURCE) cannot start the container at all.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/systemd-container-check.sh [--binary PATH] [--cache DIR] [--mirror URL]
                                          [--suite NAME] [--rebuild-base]
                                          [--watchdog-sec N] [--docker-seccomp P] [--keep]

  --binary PATH     the bftd binary (default: target/debug/bftd)
  --cache DIR       where the debootstrap tarball is kept (default:
                    $XDG_CACHE_HOME/bftd, else ~/.cache/bftd)
  --mirror URL      Debian mirror for debootstrap (default:
                    http://deb.debian.org/debian)
  --suite NAME      Debian suite (default: bookworm, systemd 252)
  --rebuild-base    download the root file system again and re-import
                    the base image
  --watchdog-sec N  WatchdogSec= of the check's drop-in (default: 3; the
                    shipped unit says 10s)
  --docker-seccomp P  docker's own seccomp profile for the container:
                    unconfined (default: the unit's SystemCallFilter is the
                    only filter, so io_uring or epoll is its verdict) or
                    default (docker's profile stacked under it)
  --keep            leave the container running and the image in place
                    (prints how to remove them)
USAGE
}

die() {
    echo "systemd-container-check.sh: $*" >&2
    exit 2
}

root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$root/target/debug/bftd"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/bftd"
mirror="http://deb.debian.org/debian"
suite="bookworm"
rebuild_base=0
watchdog_sec=3
docker_seccomp=unconfined
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary="$2"; shift 2 ;;
        --cache) [ $# -ge 2 ] || die "--cache needs a directory"; cache="$2"; shift 2 ;;
        --mirror) [ $# -ge 2 ] || die "--mirror needs a URL"; mirror="$2"; shift 2 ;;
        --suite) [ $# -ge 2 ] || die "--suite needs a name"; suite="$2"; shift 2 ;;
        --rebuild-base) rebuild_base=1; shift ;;
        --watchdog-sec) [ $# -ge 2 ] || die "--watchdog-sec needs seconds"; watchdog_sec="$2"; shift 2 ;;
        --docker-seccomp) [ $# -ge 2 ] || die "--docker-seccomp needs unconfined or default"; docker_seccomp="$2"; shift 2 ;;
        --keep) keep=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ "$watchdog_sec" =~ ^[1-9][0-9]?$ ]] || die "--watchdog-sec $watchdog_sec: expected 1..99"
case "$docker_seccomp" in
    unconfined) seccomp_opt=(--security-opt seccomp=unconfined) ;;
    default) seccomp_opt=() ;;
    *) die "--docker-seccomp $docker_seccomp: expected unconfined or default" ;;
esac

[ -f "$binary" ] && [ -x "$binary" ] ||
    die "$binary is not an executable file (build it first: cargo build -p bftd)"
version="$("$binary" --version 2>/dev/null | head -n 1)" || true
[[ "$version" == "bftd "* ]] || die "$binary --version says ${version:-nothing}: not a bftd binary"
command -v docker >/dev/null 2>&1 || die "docker is not installed"
docker info >/dev/null 2>&1 || die "docker info fails (is dockerd running, are you root?)"
etcdctl="$(command -v etcdctl)" || die "etcdctl is not installed (Debian: apt-get install etcd-client)"

# Bump when the package list or the import changes: a new tag and tarball.
base_rev=1
base_tag="bftd-systemd-base:$suite-$base_rev"
tarball="$cache/debian-$suite-systemd-$base_rev.tar"
packages="systemd,systemd-sysv,dbus,curl,procps"
image="bftd-systemd-check:$$"
name="bftd-systemd-check-$$"
n=4
started=$(date +%s%3N)
tmp="$(mktemp -d "${TMPDIR:-/tmp}/bftd-systemd-check.XXXXXX")"
container_up=0
image_built=0

log() {
    local d=$(($(date +%s%3N) - started))
    printf '[%4d.%ds] %s\n' $((d / 1000)) $((d % 1000 / 100)) "$*"
}
ms() { date +%s%3N; }

# --- the results ----------------------------------------------------------
results=()
failed=0
pass() { results+=("PASS  $*"); log "PASS $*"; }
fail() { results+=("FAIL  $*"); log "FAIL $*"; failed=1; }

summary() {
    echo
    echo "== summary ($version, $suite systemd, WatchdogSec=${watchdog_sec}s in the drop-in, docker seccomp $docker_seccomp)"
    local r
    for r in "${results[@]}"; do
        echo "  $r"
    done
    if [ ${#numbers[@]} -gt 0 ]; then
        echo "  numbers:"
        for r in "${numbers[@]}"; do
            echo "    $r"
        done
    fi
    if [ "$failed" = 0 ] && [ "$finished" = 1 ]; then
        echo "PASS: bftd@.service under systemd (READY, status, hardening, watchdog restart, catch-up)"
    elif [ "$failed" = 1 ]; then
        echo "FAIL: see the FAIL lines above"
    else
        echo "FAIL: the check stopped before its end (see the output above)"
    fi
}
numbers=()
finished=0
number() { numbers+=("$*"); log "$*"; }

cleanup() {
    local rc=$?
    set +e
    if [ "$container_up" = 1 ] && { [ "$failed" = 1 ] || [ "$rc" != 0 ]; }; then
        echo
        echo "== journal of bftd@* (last 60 lines), for the failure"
        docker exec "$name" journalctl -u 'bftd@*' --no-pager -o short-precise 2>&1 | tail -n 60
    fi
    if [ "$keep" = 1 ] && [ "$container_up" = 1 ]; then
        echo "kept: docker exec -it $name bash; remove: docker rm -f $name && docker rmi $image"
    else
        [ "$container_up" = 1 ] && docker rm -f "$name" >/dev/null 2>&1
        [ "$image_built" = 1 ] && docker rmi "$image" >/dev/null 2>&1
    fi
    rm -rf "$tmp"
    [ ${#results[@]} -eq 0 ] || summary
    if [ "$rc" = 0 ] && [ "$failed" = 1 ]; then
        exit 1
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Polls `cmd` every `step` seconds until it succeeds; 1 after `secs`.
poll() {
    local secs=$1 step=$2
    shift 2
    local deadline=$(($(ms) + secs * 1000))
    while true; do
        if "$@"; then
            return 0
        fi
        [ "$(ms)" -lt "$deadline" ] || return 1
        sleep "$step"
    done
}

in_c() { docker exec "$name" "$@"; }
prop() { in_c systemctl show -p "$2" --value "$1"; }
# A replica's /status field (a number), empty when it does not answer.
status_field() {
    in_c curl -s --max-time 2 "http://127.0.0.1:$((22379 + $1))/status" 2>/dev/null |
        grep -o "\"$2\":[0-9]*" | cut -d: -f2 || true
}
endpoints() {
    local e=() i
    for i in "$@"; do e+=("127.0.0.1:$((2379 + i))"); done
    (IFS=,; echo "${e[*]}")
}
ctl() { in_c etcdctl --dial-timeout=2s --command-timeout=5s "$@"; }
# Journal lines of a unit as "<epoch seconds.micro> <message>".
journal() { in_c journalctl -u "$1" --no-pager -o short-unix; }
# The first journal time (epoch ms) of a line of unit $1 matching $2 after
# epoch ms $3; empty if none. (awk reads to the end: an early exit would
# kill journalctl with SIGPIPE, a failure under pipefail.)
journal_ms() {
    journal "$1" | awk -v pat="$2" -v after="$3" '
        { split($1, t, "."); m = t[1] * 1000 + int(substr(t[2], 1, 3)) }
        !found && m >= after && $0 ~ pat { printf "%.0f\n", m; found = 1 }'
}

# --- 1. the base image: Debian with systemd --------------------------------
if [ "$rebuild_base" = 1 ] || ! docker image inspect "$base_tag" >/dev/null 2>&1; then
    if [ "$rebuild_base" = 1 ] || [ ! -s "$tarball" ]; then
        [ "$(id -u)" -eq 0 ] || die "debootstrap needs root"
        command -v debootstrap >/dev/null 2>&1 ||
            die "debootstrap is not installed (apt-get install debootstrap)"
        mkdir -p "$cache"
        log "debootstrap $suite ($packages) from $mirror (a minute or two)"
        debootstrap --variant=minbase --include="$packages" "$suite" "$tmp/rootfs" "$mirror" \
            >"$tmp/debootstrap.log" 2>&1 || {
            tail -n 20 "$tmp/debootstrap.log" >&2
            die "debootstrap failed"
        }
        rm -rf "$tmp"/rootfs/var/cache/apt/archives/*.deb "$tmp"/rootfs/var/lib/apt/lists/*
        tar -C "$tmp/rootfs" --numeric-owner -cf "$tarball.partial" .
        mv "$tarball.partial" "$tarball"
        rm -rf "$tmp/rootfs"
        log "cached $tarball ($(du -h "$tarball" | cut -f1))"
    else
        log "reusing $tarball"
    fi
    old_base="$(docker image inspect --format '{{.Id}}' "$base_tag" 2>/dev/null || true)"
    docker import -c 'ENV container=docker' -c 'CMD ["/lib/systemd/systemd"]' \
        "$tarball" "$base_tag" >/dev/null
    log "imported $base_tag"
    # --rebuild-base: the image the tag named before is left untagged.
    if [ -n "$old_base" ] && [ "$old_base" != "$(docker image inspect --format '{{.Id}}' "$base_tag")" ]; then
        docker rmi "$old_base" >/dev/null 2>&1 || log "could not remove the former $base_tag ($old_base)"
    fi
else
    log "reusing image $base_tag"
fi

# --- 2. the check image: bftd, the unit, a drop-in, config and keys -------
ctx="$tmp/context"
mkdir -p "$ctx"
cp "$binary" "$ctx/bftd"
cp "$etcdctl" "$ctx/etcdctl"
cp "$root/configs/bftd@.service" "$ctx/bftd@.service"
# The shipped unit stays as it is; the check runs it with fault injection
# (the stall endpoint) and a shorter watchdog.
cat >"$ctx/check.conf" <<EOF
[Service]
ExecStart=
ExecStart=/usr/local/bin/bftd run --config /etc/bftd/bftd.toml --id %i --fault-injection
WatchdogSec=${watchdog_sec}s
EOF
# A loopback cluster of 4 (clients 2379+i, replica links 12379+i, status
# 22379+i), data in the unit's StateDirectory, no core pinning (four
# replicas share this machine's cores).
"$binary" init --replicas "$n" --dir "$ctx/etc" --base-port 2379 >/dev/null
sed -i -e 's|^data_dir = .*|data_dir = "/var/lib/bftd/replica-{id}"|' \
    -e 's|^pin_cores = .*|pin_cores = "off"|' "$ctx/etc/bftd.toml"
grep -q '^data_dir = "/var/lib/bftd/replica-{id}"$' "$ctx/etc/bftd.toml" &&
    grep -q '^pin_cores = "off"$' "$ctx/etc/bftd.toml" ||
    die "bftd init wrote a config this script cannot rewrite (data_dir, pin_cores)"
cat >"$ctx/Dockerfile" <<EOF
FROM $base_tag
COPY bftd etcdctl /usr/local/bin/
COPY bftd@.service /etc/systemd/system/bftd@.service
COPY check.conf /etc/systemd/system/bftd@.service.d/check.conf
COPY etc /etc/bftd
EOF
docker build -t "$image" "$ctx" >"$tmp/build.log" 2>&1 || {
    cat "$tmp/build.log" >&2
    die "docker build of $image failed"
}
image_built=1
log "built $image ($version)"

# --- 3. systemd as PID 1 ---------------------------------------------------
docker run -d --name "$name" --hostname bftd-check --network none \
    --cap-add SYS_ADMIN --cgroupns=private "${seccomp_opt[@]}" \
    --tmpfs /run --tmpfs /run/lock --stop-signal SIGRTMIN+3 "$image" >/dev/null
container_up=1
booted() {
    local s
    s="$(in_c systemctl is-system-running 2>/dev/null)" || true
    [ "$s" = running ] || [ "$s" = degraded ]
}
if poll 60 0.5 booted; then
    pass "systemd $(in_c systemctl --version | awk 'NR == 1 { print $2 }') is PID 1 ($(in_c systemctl is-system-running || true))"
else
    fail "systemd did not boot within 60 s"
    docker logs "$name" 2>&1 | tail -n 30
    exit 1
fi
verify="$(in_c systemd-analyze verify bftd@0.service 2>&1)" || true
if [ -z "$verify" ]; then
    pass "systemd-analyze verify bftd@0.service: no warnings"
else
    fail "systemd-analyze verify bftd@0.service: $verify"
fi

# --- 4. start: activating until READY=1, then active (running) ------------
in_c systemctl enable bftd@0 bftd@1 bftd@2 bftd@3 >/dev/null 2>&1
# The states bftd@0 goes through, sampled inside the container.
states="$(in_c bash -c '
    systemctl start --no-block bftd@0 bftd@1 bftd@2 bftd@3
    last=
    for i in $(seq 1 3000); do
        s=$(systemctl show -p ActiveState,SubState --value bftd@0 | paste -sd/)
        [ "$s" != "$last" ] && { printf "%s " "$s"; last=$s; }
        [ "$s" = active/running ] && break
        [ "$s" = failed/failed ] && break
        sleep 0.01
    done')"
log "bftd@0 went through: $states"
all_active() {
    local i
    for i in 0 1 2 3; do
        [ "$(prop "bftd@$i" ActiveState)" = active ] || return 1
    done
}
if poll 120 0.5 all_active; then
    pass "bftd@0..3 active (running) after systemctl start"
else
    fail "bftd@0..3 not all active within 120 s"
    exit 1
fi
[[ "$states" == *activating/start* ]] &&
    pass "bftd@0 was activating (start) before active (running): Type=notify waited for READY=1" ||
    log "bftd@0's activating state was too short to sample (it still waited for READY=1: see the journal order below)"
# The replica logs "replica serving" (with its own clock) just before it
# sends READY=1; systemd stamps the unit's entry into "active" when READY=1
# arrives.
serving_line="$(journal bftd@0 | awk '!f && /replica serving/ { print; f = 1 }')"
serving_at="$(grep -o '[0-9-]*T[0-9:.]*Z' <<<"$serving_line" | sed -n 1p)"
active_at="$(in_c systemctl show --timestamp=us+utc -p ActiveEnterTimestamp --value bftd@0)"
log "bftd@0 logged \"replica serving\" at $serving_at; systemd: active since $active_at"
serving_us="$(date -d "$serving_at" +%s%6N 2>/dev/null || true)"
active_us="$(date -d "$active_at" +%s%6N 2>/dev/null || true)"
if [[ "$serving_us" =~ ^[0-9]+$ && "$active_us" =~ ^[0-9]+$ ]] && [ "$serving_us" -le "$active_us" ]; then
    pass "bftd@0 became active $((active_us - serving_us)) us after it logged \"replica serving\" (then sent READY=1)"
else
    fail "bftd@0's ActiveEnterTimestamp ($active_at) is not after its \"replica serving\" ($serving_at)"
fi
ready_ms() { # time from exec to READY=1 (active), ms, from systemd's own stamps
    local a b
    a="$(prop "$1" ExecMainStartTimestampMonotonic)"
    b="$(prop "$1" ActiveEnterTimestampMonotonic)"
    echo $(((b - a) / 1000))
}
t_ready=()
for i in 0 1 2 3; do t_ready+=("bftd@$i $(ready_ms "bftd@$i") ms"); done
number "time to READY (ExecMainStart -> active): ${t_ready[*]}"

# --- 5. STATUS= and the cluster --------------------------------------------
status_ok() {
    [[ "$(prop bftd@0 StatusText)" =~ ^regency\ [0-9]+,\ leader\ [0-9]+,\ cid\ [0-9]+,\ revision\ [0-9]+$ ]]
}
if poll 30 0.5 status_ok; then
    pass "StatusText: $(prop bftd@0 StatusText)"
else
    fail "StatusText is \"$(prop bftd@0 StatusText)\", not \"regency R, leader L, cid C, revision V\""
fi
echo "    $(in_c systemctl show -p ActiveState,SubState,StatusText,NRestarts,MainPID bftd@0 | paste -sd' ')"
in_c systemctl status --no-pager -n 0 bftd@0 | sed 's/^/    /' || true
all="$(endpoints 0 1 2 3)"
if ctl --endpoints="$all" put check-key before-stall >/dev/null &&
    [ "$(ctl --endpoints="$(endpoints 0)" get check-key --print-value-only)" = before-stall ]; then
    pass "etcdctl put on the cluster, get from bftd@0: before-stall"
else
    fail "etcdctl put/get failed"
fi

# --- 6. hardening in force -------------------------------------------------
for i in 0 1 2 3; do
    pid="$(prop "bftd@$i" MainPID)"
    st="$(in_c grep -E '^(NoNewPrivs|Seccomp|Seccomp_filters|CapBnd|CapEff|CapPrm):' "/proc/$pid/status" | tr -s '\t ' ' ' | paste -sd' ')"
    if [[ "$st" == *"CapPrm: 0000000000000000"* && "$st" == *"CapEff: 0000000000000000"* &&
        "$st" == *"CapBnd: 0000000000000000"* && "$st" == *"NoNewPrivs: 1"* && "$st" == *"Seccomp: 2"* ]]; then
        pass "bftd@$i (pid $pid) runs confined: $st"
    else
        fail "bftd@$i (pid $pid) is not confined as the unit asks: $st"
    fi
done
pid="$(prop bftd@0 MainPID)"
ro="$(in_c nsenter -t "$pid" -m -- sh -c 'touch /usr/local/bin/x 2>&1; touch /var/lib/bftd/x && rm /var/lib/bftd/x && echo state-dir-writable' 2>&1)" || true
if [[ "$ro" == *"Read-only file system"* && "$ro" == *state-dir-writable* ]]; then
    pass "bftd@0's mount namespace: /usr read-only, /var/lib/bftd writable (ProtectSystem=strict, StateDirectory)"
else
    fail "bftd@0's mount namespace is not ProtectSystem=strict with a writable StateDirectory: $ro"
fi
exposure="$(in_c systemd-analyze security --no-pager bftd@0.service 2>&1 | grep -o 'Overall exposure level.*' || true)"
number "systemd-analyze security bftd@0.service: ${exposure:-no verdict}"
nofile="$(in_c grep 'Max open files' "/proc/$pid/limits" | tr -s ' ' | cut -d' ' -f4,5 || true)"
number "bftd@0's open-files limit (soft hard): $nofile (LimitNOFILE=65536, clamped to what the container allows)"
links="$(journal bftd@0 | grep -E 'replica links|io_uring is not available' | sed 's/^[0-9.]* [^ ]* //' | sed 's/\x1b\[[0-9;]*m//g')"
echo "$links" | sed 's/^/    /'
if [[ "$links" == *"io_uring is not available"* ]]; then
    io="epoll (io_uring refused: $(echo "$links" | grep -o 'io_uring is not available ([^)]*)' | head -n 1))"
elif [[ "$links" == *"io=Uring"* || "$links" == *"io: Uring"* ]]; then
    io="io_uring"
else
    io="unknown"
fi
number "replica links under the unit's SystemCallFilter: $io"

# --- 7. reload (ExecReload: SIGHUP) ----------------------------------------
pid="$(prop bftd@0 MainPID)"
t_reload=$(ms)
in_c systemctl reload bftd@0
reloaded() { [ -n "$(journal_ms bftd@0 'SIGHUP' "$t_reload")" ]; }
if poll 15 0.3 reloaded && [ "$(prop bftd@0 MainPID)" = "$pid" ] &&
    [ "$(prop bftd@0 ActiveState)" = active ]; then
    pass "systemctl reload bftd@0: SIGHUP handled, same pid, still active"
else
    fail "systemctl reload bftd@0: no SIGHUP line in the journal or the replica did not stay up"
fi

# --- 8. the watchdog: stall bftd@0's consensus thread ----------------------
cid_of() { status_field "$1" last_decided_cid; }
in_step() {
    local a b c d
    a="$(cid_of 0)" b="$(cid_of 1)" c="$(cid_of 2)" d="$(cid_of 3)"
    [ -n "$a" ] && [ "$a" = "$b" ] && [ "$b" = "$c" ] && [ "$c" = "$d" ]
}
poll 30 0.5 in_step || log "replicas not at one cid before the stall: $(cid_of 0) $(cid_of 1) $(cid_of 2) $(cid_of 3)"
restarts0="$(prop bftd@0 NRestarts)"
pid0="$(prop bftd@0 MainPID)"
cid_before="$(cid_of 0)"
stall_ms=60000
t_stall=$(ms)
in_c curl -sf -X PUT "http://127.0.0.1:22379/debug/stall_control?ms=$stall_ms" >/dev/null ||
    { fail "PUT /debug/stall_control refused"; exit 1; }
log "stalled bftd@0's control thread for $stall_ms ms (pid $pid0, NRestarts $restarts0, cid $cid_before)"
# The other three keep ordering writes meanwhile: 150 puts, one etcdctl
# each, through the stall, the restart and after; the writer prints how
# many were acknowledged.
others="$(endpoints 1 2 3)"
writes=150
docker exec "$name" bash -c "ok=0
    for i in \$(seq 1 $writes); do
        etcdctl --endpoints=$others --dial-timeout=2s --command-timeout=5s put stall-\$i v\$i >/dev/null 2>&1 &&
            ok=\$((ok + 1))
    done
    echo \$ok" >"$tmp/writer.out" 2>&1 &
writer=$!
saw_silent=0
restarted() {
    local p
    [ "$(prop bftd@0 StatusText)" != "control thread silent" ] || saw_silent=1
    p="$(prop bftd@0 MainPID)"
    [ "$(prop bftd@0 NRestarts)" -gt "$restarts0" ] && [ "$p" != 0 ] && [ "$p" != "$pid0" ]
}
if poll $((watchdog_sec * 4 + 30)) 0.2 restarted; then
    t_seen=$(ms)
    pass "bftd@0 restarted: NRestarts $restarts0 -> $(prop bftd@0 NRestarts), pid $pid0 -> $(prop bftd@0 MainPID)"
else
    fail "bftd@0 not restarted within $((watchdog_sec * 4 + 30)) s of the stall (NRestarts $(prop bftd@0 NRestarts))"
    exit 1
fi
[ "$saw_silent" = 1 ] &&
    pass "StatusText read \"control thread silent\" while the watchdog went unfed" ||
    log "StatusText \"control thread silent\" not sampled during the stall"
active_again() { [ "$(prop bftd@0 ActiveState)/$(prop bftd@0 SubState)" = active/running ]; }
if poll 60 0.2 active_again; then
    t_active=$(ms)
    pass "bftd@0 active (running) again after the restart (READY=1 from the new process)"
else
    fail "bftd@0 not active again within 60 s of the restart"
    exit 1
fi
echo "    $(in_c systemctl show -p ActiveState,SubState,StatusText,NRestarts,MainPID,Result bftd@0 | paste -sd' ')"
journal bftd@0 | awk -v after="$t_stall" '{ split($1, t, "."); if (t[1] * 1000 + int(substr(t[2], 1, 3)) >= after) print }' |
    grep -E 'systemd\[1\]|stalls|silent|replica serving' | sed 's/^[0-9.]* [^ ]* //' | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^/    /'
t_timeout="$(journal_ms bftd@0 'Watchdog timeout' "$t_stall")"
t_killed="$(journal_ms bftd@0 'Main process exited' "$t_stall")"
t_started="$(journal_ms bftd@0 'Started bftd@0' "$t_stall")"
# Feeding stops once the control thread is silent for WatchdogSec/2 (seen
# within a WatchdogSec/4 period), then systemd waits WatchdogSec from the
# last ping: at most ~1.75 x WatchdogSec, plus slack for a loaded machine.
limit_ms=$((watchdog_sec * 2000 + 2000))
if [[ "$t_timeout" =~ ^[0-9]+$ ]] && [ $((t_timeout - t_stall)) -le "$limit_ms" ]; then
    pass "journal: \"Watchdog timeout\" $((t_timeout - t_stall)) ms after the stall (bound $limit_ms ms)"
elif [[ "$t_timeout" =~ ^[0-9]+$ ]]; then
    fail "journal: \"Watchdog timeout\" only $((t_timeout - t_stall)) ms after the stall (bound $limit_ms ms)"
else
    fail "journal: no \"Watchdog timeout\" line after the stall"
fi
if [ -n "$(journal_ms bftd@0 "Failed with result 'watchdog'" "$t_stall")" ]; then
    pass "journal: bftd@0 \"Failed with result 'watchdog'\""
else
    fail "journal: no \"Failed with result 'watchdog'\""
fi
number "stall -> Watchdog timeout: ${t_timeout:+$((t_timeout - t_stall)) ms} (WatchdogSec=${watchdog_sec}s; feeding stops once the control thread is silent for WatchdogSec/2)"
[ -n "$t_killed" ] && number "stall -> main process exited (SIGABRT): $((t_killed - t_stall)) ms"
[ -n "$t_started" ] && number "stall -> restarted and READY again (\"Started\"): $((t_started - t_stall)) ms (RestartSec=1)"
number "restarted process: exec -> READY $(ready_ms bftd@0) ms; NRestarts $(prop bftd@0 NRestarts)"
[ "$(prop bftd@0 NRestarts)" = $((restarts0 + 1)) ] &&
    pass "NRestarts went up by exactly one ($restarts0 -> $((restarts0 + 1)))" ||
    fail "NRestarts is $(prop bftd@0 NRestarts), expected $((restarts0 + 1))"

# --- 9. catch-up -------------------------------------------------------------
writer_done() { ! kill -0 "$writer" 2>/dev/null; }
poll 300 0.5 writer_done || { fail "the writer did not finish $writes puts within 300 s"; exit 1; }
wait "$writer" || true
acked="$(cat "$tmp/writer.out")"
[[ "$acked" =~ ^[0-9]+$ ]] || { fail "the writer failed: $acked"; exit 1; }
log "the writer's puts through bftd@1..3: $acked of $writes acknowledged"
ctl --endpoints="$others" put after-restart yes >/dev/null
target=0
for i in 1 2 3; do
    c="$(cid_of "$i")"
    [ -n "$c" ] && [ "$c" -gt "$target" ] && target=$c
done
t_target=$(ms)
caught_up() {
    local c
    c="$(cid_of 0)"
    [ -n "$c" ] && [ "$c" -ge "$target" ]
}
if poll 90 0.5 caught_up; then
    now=$(ms)
    number "bftd@0 caught up: last_decided_cid $cid_before before the stall, $(cid_of 0) >= the others' $target ($((now - t_target)) ms after their cid was read once the writer ended, $((now - t_active)) ms after bftd@0 was active again; the writer ran meanwhile)"
    pass "bftd@0's last_decided_cid reached the others' ($target)"
else
    fail "bftd@0 at cid $(cid_of 0), the others at $target, 90 s after the restart"
fi
stall_keys=$(ctl --endpoints="$(endpoints 0)" get stall- --prefix --keys-only | grep -c . || true)
if [ "$(ctl --endpoints="$(endpoints 0)" get after-restart --print-value-only)" = yes ] &&
    [ "$stall_keys" -ge "$acked" ] && [ "$acked" -ge 1 ]; then
    pass "bftd@0 serves the $stall_keys keys put through its stall and restart ($acked acknowledged) and the one after"
else
    fail "bftd@0 serves $stall_keys of the $acked acknowledged keys put through its stall and restart"
fi
[ "$(prop bftd@0 StatusText)" != "control thread silent" ] && status_ok &&
    pass "StatusText after the restart: $(prop bftd@0 StatusText)" ||
    fail "StatusText after the restart: $(prop bftd@0 StatusText)"

# --- 10. stop ----------------------------------------------------------------
t_stop=$(ms)
in_c systemctl stop bftd@0 bftd@1 bftd@2 bftd@3
stopped_ok=1
for i in 0 1 2 3; do
    s="$(prop "bftd@$i" ActiveState)/$(prop "bftd@$i" Result)"
    [ "$s" = inactive/success ] || { stopped_ok=0; log "bftd@$i after stop: $s"; }
done
if [ "$stopped_ok" = 1 ]; then
    pass "systemctl stop bftd@0..3: inactive, Result=success ($(($(ms) - t_stop)) ms)"
else
    fail "systemctl stop bftd@0..3 did not end every replica cleanly"
fi
finished=1
