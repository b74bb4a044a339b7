//! Finds the system's DPDK with pkg-config, compiles the C shim with its
//! raw cflags (they carry `-include rte_config.h` and `-march`), generates
//! the bindings with bindgen from the same flags, and links libdpdk.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const INSTALL_HINT: &str = "the `dpdk` feature needs DPDK's headers and libraries, libclang and \
pkg-config: on Debian or Ubuntu run `apt-get install libdpdk-dev libclang-dev pkg-config` \
(or build without `--features dpdk`)";

/// `pkg-config <args> libdpdk`, split on whitespace.
fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}): {INSTALL_HINT}"));
    if !out.status.success() {
        panic!(
            "pkg-config {} libdpdk failed: {}\n{INSTALL_HINT}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8(out.stdout)
        .expect("pkg-config prints UTF-8")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    let version = pkg_config(&["--modversion"]).join("");
    let cflags = pkg_config(&["--cflags"]);
    let libs = pkg_config(&["--libs"]);
    println!("cargo:version={version}");
    println!("cargo:rustc-env=DPDK_SYS_VERSION={version}");

    let mut build = cc::Build::new();
    build.file("src/shim.c").include("src").warnings(false);
    for flag in &cflags {
        build.flag(flag);
    }
    build.compile("bftd_dpdk_shim");

    let bindings = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&cflags)
        .allowlist_function("rte_eal_init")
        .allowlist_function("rte_eal_cleanup")
        .allowlist_function("rte_strerror")
        .allowlist_function("rte_socket_id")
        .allowlist_function("rte_eth_dev_count_avail")
        .allowlist_function("rte_eth_dev_get_port_by_name")
        .allowlist_function("rte_eth_dev_info_get")
        .allowlist_function("rte_eth_dev_configure")
        .allowlist_function("rte_eth_rx_queue_setup")
        .allowlist_function("rte_eth_tx_queue_setup")
        .allowlist_function("rte_eth_dev_start")
        .allowlist_function("rte_eth_dev_stop")
        .allowlist_function("rte_eth_dev_close")
        .allowlist_function("rte_eth_dev_socket_id")
        .allowlist_function("rte_eth_macaddr_get")
        .allowlist_function("rte_eth_promiscuous_enable")
        .allowlist_function("rte_eth_stats_get")
        .allowlist_function("rte_eth_link_get_nowait")
        .allowlist_function("rte_pktmbuf_pool_create")
        .allowlist_function("rte_mempool_free")
        .allowlist_function("rte_mempool_avail_count")
        .allowlist_function("bftd_.*")
        .allowlist_var("RTE_ETHER_.*")
        .allowlist_var("RTE_MBUF_DEFAULT_.*")
        .allowlist_var("RTE_PKTMBUF_HEADROOM")
        .allowlist_var("RTE_MAX_ETHPORTS")
        .allowlist_var("SOCKET_ID_ANY")
        // Touched only through the shim: no layout to get wrong.
        .opaque_type("rte_mbuf")
        .opaque_type("rte_mempool")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .generate()
        .unwrap_or_else(|e| panic!("bindgen over the DPDK headers failed: {e}\n{INSTALL_HINT}"));
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("write bindings.rs");

    for flag in &libs {
        if let Some(dir) = flag.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(lib) = flag.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={lib}");
        }
        // -Wl,--as-needed: rustc already links dylibs as needed.
    }
}
