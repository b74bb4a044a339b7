#!/usr/bin/env bash
# Builds the bftd container image from a bftd binary with no base image and
# no registry: the build context holds the binary, the shared libraries
# `ldd` lists for it and the dynamic loader, each at the path the binary
# asks for, under deploy/container/Dockerfile (FROM scratch).
#
#   scripts/container-image.sh                     # target/debug/bftd -> bftd:local
#   scripts/container-image.sh --binary target/release/bftd --tag bftd:1
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: scripts/container-image.sh [--binary PATH] [--tag TAG] [--context DIR] [--no-strip]

  --binary PATH   the bftd binary (default: target/debug/bftd; this
                  workspace's dev profile is optimized)
  --tag TAG       image tag (default: bftd:local)
  --context DIR   assemble the build context here and keep it (default: a
                  temporary directory, removed afterwards); DIR must not exist
  --no-strip      copy the binary as is (default: its debug sections are
                  stripped from the copy when `strip` is installed; symbols
                  stay, so panics still name functions)
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
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || die "--binary needs a path"; binary="$2"; shift 2 ;;
        --tag) [ $# -ge 2 ] || die "--tag needs a name"; tag="$2"; shift 2 ;;
        --context) [ $# -ge 2 ] || die "--context needs a directory"; context="$2"; shift 2 ;;
        --no-strip) strip_debug=0; shift ;;
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
# needs none.
ldd_out="$(ldd "$binary" 2>&1)" || true
libs=()
if ! grep -qE 'not a dynamic executable|statically linked' <<<"$ldd_out"; then
    if grep -q 'not found' <<<"$ldd_out"; then
        die "ldd cannot find libraries of $binary:"$'\n'"$(grep 'not found' <<<"$ldd_out")"
    fi
    while read -r line; do
        case "$line" in
            *'=> /'*) lib="${line#*=> }"; libs+=("${lib%% (*}") ;;
            /*) libs+=("${line%% (*}") ;;
        esac
    done <<<"$ldd_out"
    [ ${#libs[@]} -gt 0 ] || die "ldd listed no libraries for $binary:"$'\n'"$ldd_out"
fi
for lib in "${libs[@]}"; do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
done

cp "$root/deploy/container/Dockerfile" "$context/Dockerfile"
echo "build context $context: bftd + ${#libs[@]} libraries (${libs[*]:-none})"
docker build -t "$tag" "$context"

# The image must run the binary: a library ldd missed shows up here.
[ "$(docker run --rm --network none --entrypoint /usr/local/bin/bftd "$tag" --version)" = "$version" ] ||
    die "the image $tag cannot run bftd (a library missing from the build context?)"
echo "built $tag ($(docker image inspect --format '{{.Size}}' "$tag") bytes); run it with deploy/container/compose.yaml"
