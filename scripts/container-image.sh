#!/usr/bin/env bash
# Builds the bftd container image from a bftd binary with no base image and
# no registry: the build context holds the binary, the shared libraries
# `ldd` lists for it and the dynamic loader, each at the path the binary
# asks for, under deploy/container/Dockerfile (FROM scratch).
#
#   scripts/container-image.sh                     # target/debug/bftd -> bftd:local
#   scripts/container-image.sh --binary target/release/bftd --tag bftd:1
#
# A binary built with `--features dpdk` (it links librte_eal) also gets the
# DPDK drivers the EAL loads at run time with dlopen from its compiled-in
# plugin directory (Debian: /usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0),
# which `ldd` cannot see, plus the libraries `ldd` lists for each of them;
# its default tag is bftd:local-dpdk.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/container-image.sh [--binary PATH] [--tag TAG] [--context DIR] [--no-strip]
                                  [--dpdk] [--pmds LIST|all]

  --binary PATH   the bftd binary (default: target/debug/bftd; this
                  workspace's dev profile is optimized)
  --tag TAG       image tag (default: bftd:local, bftd:local-dpdk for a
                  binary built with --features dpdk)
  --context DIR   assemble the build context here and keep it (default: a
                  temporary directory, removed afterwards); DIR must not exist
  --no-strip      copy the binary as is (default: its debug sections are
                  stripped from the copy when `strip` is installed; symbols
                  stay, so panics still name functions)
  --dpdk          require a binary built with --features dpdk (detected
                  from its libraries without this flag)
  --pmds LIST     DPDK drivers put in the image's plugin directory, by
                  library name without librte_ (default: the virtual
                  devices bus_vdev,net_af_packet,net_af_xdp,net_ring,
                  net_null,net_memif and mempool_ring,mempool_stack; any
                  driver these link, e.g. bus_pci, comes along); `all`
                  copies the whole directory (every NIC driver, and their
                  libraries such as libibverbs)
USAGE
}

die() {
    echo "container-image.sh: $*" >&2
    exit 1
}

root="$(cd "$(dirname "$0")/.." && pwd)"
binary="$root/target/debug/bftd"
tag="bftd:local"
context=""
strip_debug=1
want_dpdk=0
pmds="bus_vdev,net_af_packet,net_af_xdp,net_ring,net_null,net_memif,mempool_ring,mempool_stack"
tag_given=0
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary="$2"; shift 2 ;;
        --tag) [ $# -ge 2 ] || die "--tag needs a name"; tag="$2"; tag_given=1; shift 2 ;;
        --context) [ $# -ge 2 ] || die "--context needs a directory"; context="$2"; shift 2 ;;
        --no-strip) strip_debug=0; shift ;;
        --dpdk) want_dpdk=1; shift ;;
        --pmds) [ $# -ge 2 ] || die "--pmds needs a list or all"; pmds="$2"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

[ -f "$binary" ] && [ -x "$binary" ] ||
    die "$binary is not an executable file (build it first: cargo build -p bftd)"
command -v docker >/dev/null 2>&1 || die "docker is not installed"
command -v ldd >/dev/null 2>&1 || die "ldd is not installed (Debian: libc-bin)"
version="$("$binary" --version 2>/dev/null | head -n 1)" || true
[[ "$version" == "bftd "* ]] ||
    die "$binary --version says ${version:-nothing}: not a bftd binary for this machine"

if [ -n "$context" ]; then
    [ ! -e "$context" ] || die "$context exists: give --context a new directory"
    mkdir -p "$context"
else
    context="$(mktemp -d "${TMPDIR:-/tmp}/bftd-image.XXXXXX")"
    trap 'rm -rf "$context"' EXIT
fi
rootfs="$context/rootfs"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/bftd" "$context/data"

cp "$binary" "$rootfs/usr/local/bin/bftd"
if [ "$strip_debug" = 1 ] && command -v strip >/dev/null 2>&1; then
    strip --strip-debug "$rootfs/usr/local/bin/bftd"
fi

# The libraries and the loader, as ldd resolves them on this machine:
#   libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)
#   /lib64/ld-linux-x86-64.so.2 (0x...)
# (linux-vdso is the kernel's and has no file). A statically linked binary
# needs none. Prints one path a line.
ldd_libs() {
    local ldd_out line lib
    ldd_out="$(ldd "$1" 2>&1)" || true
    if grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
        return 0
    fi
    if grep -q 'not found' <<<"$ldd_out"; then
        die "ldd cannot find libraries of $1 (install them on this machine):"$'\n'"$(grep 'not found' <<<"$ldd_out")"
    fi
    while read -r line; do
        case "$line" in
            *'=> /'*) lib="${line#*=> }"; echo "${lib%% (*}" ;;
            /*) echo "${line%% (*}" ;;
        esac
    done <<<"$ldd_out"
}

# ldd_libs FILE into the array named by $2 (a failure stops the script).
read_libs() {
    local out
    out="$(ldd_libs "$1")" || exit 1
    mapfile -t "$2" < <([ -z "$out" ] || printf '%s\n' "$out")
}

read_libs "$binary" libs
if ! grep -qE 'not a dynamic executable|statically linked' <<<"$(ldd "$binary" 2>&1)"; then
    [ ${#libs[@]} -gt 0 ] || die "ldd listed no libraries for $binary"
fi

# DPDK: the EAL dlopens every driver in its compiled-in plugin directory.
pmdsdir=""
eal=""
for lib in "${libs[@]}"; do
    case "$(basename "$lib")" in librte_eal.so*) eal="$lib" ;; esac
done
if [ -n "$eal" ]; then
    pmdsdir="$(grep -aoE '/[[:alnum:]_./-]*/dpdk/pmds-[0-9.]+' "$eal" | head -n 1)" || true
    [ -n "$pmdsdir" ] && [ -d "$pmdsdir" ] ||
        die "cannot find the DPDK plugin directory compiled into $eal (found '${pmdsdir}'; Debian's libdpdk-dev puts drivers in /usr/lib/x86_64-linux-gnu/dpdk/pmds-*)"
    [ "$tag_given" = 1 ] || tag="bftd:local-dpdk"
elif [ "$want_dpdk" = 1 ]; then
    die "$binary does not link librte_eal: build it with cargo build -p bftd --features dpdk"
fi

# Driver libraries for the plugin directory: the regular files, by name.
declare -A pmd_files=()
if [ -n "$pmdsdir" ]; then
    if [ "$pmds" = all ]; then
        while read -r f; do pmd_files["$(basename "$f")"]=1; done \
            < <(find "$pmdsdir" -maxdepth 1 -type f -name 'librte_*.so*')
    else
        IFS=, read -r -a wanted <<<"$pmds"
        for name in "${wanted[@]}"; do
            f="$(find "$pmdsdir" -maxdepth 1 -type f -name "librte_${name}.so*" | head -n 1)"
            [ -n "$f" ] || die "--pmds: no driver librte_${name}.so* in $pmdsdir (ls $pmdsdir)"
            pmd_files["$(basename "$f")"]=1
        done
    fi
fi

# Every library, also those the drivers link: copied as files, except
# those that live in the plugin directory (Debian links them from
# /lib/x86_64-linux-gnu): those become symlinks into it, so the loader and
# the EAL's dlopen find one file, not two copies registering one driver
# twice. A driver a library or driver links joins the plugin directory.
declare -A seen=()
queue=("${libs[@]}")
for f in "${!pmd_files[@]}"; do queue+=("$pmdsdir/$f"); done
copied=0
while [ ${#queue[@]} -gt 0 ]; do
    lib="${queue[0]}"
    queue=("${queue[@]:1}")
    [ -z "${seen[$lib]:-}" ] || continue
    seen["$lib"]=1
    real="$(readlink -f "$lib")"
    mkdir -p "$rootfs$(dirname "$lib")"
    if [ -n "$pmdsdir" ] && [ "$(dirname "$real")" = "$pmdsdir" ]; then
        pmd_files["$(basename "$real")"]=1
        if [ "$(dirname "$lib")" != "$pmdsdir" ]; then
            ln -sfn "$real" "$rootfs$lib"
        fi
        target="$rootfs$real"
    else
        target="$rootfs$lib"
    fi
    if [ ! -e "$target" ]; then
        mkdir -p "$(dirname "$target")"
        cp -L "$lib" "$target"
        copied=$((copied + 1))
        # A driver's own libraries (for the binary, ldd listed them all).
        if [ -n "$pmdsdir" ] && [ "$(dirname "$real")" = "$pmdsdir" ]; then
            read_libs "$real" more
            queue+=("${more[@]}")
        fi
    fi
done
# The plugin directory's names for each driver (librte_x.so and .so.23 ->
# librte_x.so.23.0), as the EAL lists it.
if [ -n "$pmdsdir" ]; then
    for f in "${!pmd_files[@]}"; do
        base="${f%%.so*}"
        for link in "$pmdsdir/$base".so*; do
            [ -L "$link" ] || continue
            [ -e "$rootfs$link" ] || cp -P "$link" "$rootfs$link"
        done
    done
    echo "DPDK plugin directory $pmdsdir: ${#pmd_files[@]} drivers (${!pmd_files[*]})"
fi

cp "$root/deploy/container/Dockerfile" "$context/Dockerfile"
echo "build context $context: bftd + $copied library files (${libs[*]:-none}${pmdsdir:+ and DPDK drivers})"
docker build -t "$tag" "$context"

# The image must run the binary: a library ldd missed shows up here.
[ "$(docker run --rm --network none --entrypoint /usr/local/bin/bftd "$tag" --version)" = "$version" ] ||
    die "the image $tag cannot run bftd (a library missing from the build context?)"
echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag") bytes); run it with deploy/container/compose.yaml"
