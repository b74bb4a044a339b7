#!/usr/bin/env bash
# Writes a cluster config and keys for bftd replicas in containers, one IP
# address each: `bftd init` writes a loopback cluster, then its addresses
# become <ip>:2379 (clients), <ip>:2380 (replica links) and <ip>:2381
# (/healthz, /status, /metrics), data_dir goes to the containers' volume
# (/var/lib/bftd/replica-{id}), and core pinning is off (several replicas
# share the host's cores). The defaults match deploy/container/compose.yaml.
#
#   scripts/container-config.sh --dir deploy/container/etc
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/container-config.sh --dir DIR [--ips IP,IP,IP,IP,...] [--bftd PATH]
                                   [--durability fsync|memory] [--owner UID]

  --dir DIR        where bftd.toml and keys/ go (mounted read-only at
                   /etc/bftd in every container); must not hold a bftd.toml
  --ips LIST       one IPv4 address per replica, comma-separated, n = 3f+1
                   (default: 172.28.0.11,172.28.0.12,172.28.0.13,172.28.0.14,
                   the addresses of deploy/container/compose.yaml)
  --bftd PATH      the bftd binary that writes the keys (default: bftd on
                   PATH, else target/debug/bftd)
  --durability D   fsync (default) or memory
  --owner UID      the containers' user, who must read the keys
                   (default: 10001, the image's user); run as root to chown
USAGE
}

die() {
    echo "container-config.sh: $*" >&2
    exit 1
}

root="$(cd "$(dirname "$0")/.." && pwd)"
dir=""
ips="172.28.0.11,172.28.0.12,172.28.0.13,172.28.0.14"
bftd=""
durability="fsync"
owner=10001
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) [ $# -ge 2 ] || die "--dir needs a directory"; dir="$2"; shift 2 ;;
        --ips) [ $# -ge 2 ] || die "--ips needs a list"; ips="$2"; shift 2 ;;
        --bftd) [ $# -ge 2 ] || die "--bftd needs a path"; bftd="$2"; shift 2 ;;
        --durability) [ $# -ge 2 ] || die "--durability needs fsync or memory"; durability="$2"; shift 2 ;;
        --owner) [ $# -ge 2 ] || die "--owner needs a uid"; owner="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[ -n "$dir" ] || { usage >&2; die "--dir is required"; }
[[ "$owner" =~ ^[0-9]+$ ]] || die "--owner $owner: expected a numeric uid"
if [ -z "$bftd" ]; then
    bftd="$(command -v bftd || echo "$root/target/debug/bftd")"
fi
[ -x "$bftd" ] || die "$bftd is not an executable (build it: cargo build -p bftd, or give --bftd)"

IFS=, read -r -a addr <<<"$ips"
for ip in "${addr[@]}"; do
    [[ "$ip" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] &&
        [ "${BASH_REMATCH[1]}" -le 255 ] && [ "${BASH_REMATCH[2]}" -le 255 ] &&
        [ "${BASH_REMATCH[3]}" -le 255 ] && [ "${BASH_REMATCH[4]}" -le 255 ] ||
        die "--ips: $ip is not an IPv4 address"
done
dups="$(printf '%s\n' "${addr[@]}" | sort | uniq -d)"
[ -z "$dups" ] || die "--ips: $dups given twice (one address per replica)"
n=${#addr[@]}

# Loopback ports of `bftd init --base-port 2379`: clients 2379+i, replica
# links 12379+i, status 22379+i; each becomes the replica's own IP with
# the fixed ports 2379, 2380, 2381.
"$bftd" init --replicas "$n" --dir "$dir" --base-port 2379 --durability "$durability" >/dev/null
toml="$dir/bftd.toml"
script=()
for ((i = 0; i < n; i++)); do
    ip="${addr[$i]}"
    script+=(-e "s/\"127\\.0\\.0\\.1:$((2379 + i))\"/\"$ip:2379\"/")
    script+=(-e "s/\"127\\.0\\.0\\.1:$((12379 + i))\"/\"$ip:2380\"/")
    script+=(-e "s/\"127\\.0\\.0\\.1:$((22379 + i))\"/\"$ip:2381\"/")
done
script+=(-e 's|^data_dir = .*|data_dir = "/var/lib/bftd/replica-{id}"|')
script+=(-e 's|^pin_cores = .*|pin_cores = "off"|')
sed -i "${script[@]}" "$toml"
! grep -q '127\.0\.0\.1' "$toml" || die "$toml still names 127.0.0.1 (did bftd init change its format?)"
grep -q '^data_dir = "/var/lib/bftd/replica-{id}"$' "$toml" || die "$toml: data_dir not rewritten"
grep -q '^pin_cores = "off"$' "$toml" || die "$toml: pin_cores not rewritten"

if [ "$(id -u)" -eq 0 ]; then
    chown -R "$owner:$owner" "$dir/keys"
    owned="keys owned by uid $owner"
else
    owned="keys owned by you: the containers' user cannot read them; run: sudo chown -R $owner:$owner $dir/keys"
fi
echo "wrote $toml for $n replicas at ${addr[*]} ($owned)"
