#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine,
# then runs every test of the workspace (unit, scenario, simulator seeds,
# process-level cluster tests with etcdctl).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)   # a real third-party etcd client
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)      # baseline for perf/ benchmarks
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler) # etcd-client crate's build script
command -v ip >/dev/null 2>&1 || need+=(iproute2)           # network-namespace fault tests
command -v curl >/dev/null 2>&1 || need+=(curl)             # TLS status port and JSON gateway tests
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd) # unit file verification
command -v promtool >/dev/null 2>&1 || need+=(prometheus)   # alert rules and a real scrape of a test cluster
# The `dpdk` feature's build (bindgen over DPDK's headers, its libraries and
# virtual-device drivers); the default build needs none of these.
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists libdpdk 2>/dev/null || need+=(libdpdk-dev)
# bindgen loads libclang.so itself (libclang1-N); libclang-cpp.so, which
# other LLVM packages bring, does not do (a fresh machine had only that).
compgen -G "/usr/lib/llvm-*/lib/libclang.so*" >/dev/null \
    || compgen -G "/usr/lib/llvm-*/lib/libclang-[0-9]*.so*" >/dev/null \
    || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing test dependencies: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo test --workspace --locked "$@"

# Replica links over DPDK (feature `dpdk`, outside the default build): the
# EAL on a loopback ring port, links between processes over net_af_packet
# on veths in network namespaces, a 4-replica cluster on them serving
# etcdctl through a leader's SIGKILL, and the same as 4 containers whose
# EALs run on hugepages the test reserves and releases (the last three
# skip without root; the last also without docker).
cargo test -p nic --features dpdk --locked --test dpdk_eal --test dpdk_link
cargo test -p bftd --features dpdk --locked --test dpdk --test container_dpdk
