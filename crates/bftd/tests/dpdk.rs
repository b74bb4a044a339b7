//! Issue 12: a 4-replica cluster whose replica links run over DPDK
//! (`net_af_packet` on a veth in each replica's network namespace, no
//! hugepages, no NIC), serving etcdctl and surviving a SIGKILL of the
//! leader. Client traffic reaches each replica on its kernel interface.
//! Needs root (namespaces); skipped, saying so, otherwise. Build:
//! `cargo test -p bftd --features dpdk --test dpdk`.
#![cfg(feature = "dpdk")]

mod common;

use std::time::{Duration, Instant};

use common::*;

fn revision(c: &Cluster, i: u16) -> u64 {
    c.status(i)["revision"].as_u64().unwrap()
}

#[test]
fn a_cluster_on_dpdk_links_serves_etcdctl_and_survives_the_leaders_death() {
    if !Netns::available() {
        eprintln!("skipped: needs root and iproute2 for network namespaces");
        return;
    }
    let mut c = Cluster::start_with(
        "dpdk",
        Opts {
            netns: true,
            dpdk: true,
            ..Opts::new(4)
        },
    );
    for i in 0..4u16 {
        let log = std::fs::read_to_string(c.log_path(i)).unwrap_or_default();
        assert!(
            log.contains("starting DPDK") && log.contains("\"dpdk\""),
            "replica {i} runs its links on DPDK:\n{}",
            c.log_tail(i)
        );
    }
    let all = c.endpoints().join(",");
    assert!(ok_etcdctl(&all, &["put", "k0", "v0"]).contains("OK"));
    for i in 0..4u16 {
        let at = c.client_addr(i).to_string();
        assert_eq!(
            ok_etcdctl(&at, &["get", "k0", "--print-value-only"]).trim(),
            "v0"
        );
    }

    let leader = c.leader(Duration::from_secs(10));
    c.kill(leader);
    let rest: Vec<String> = (0..4u16)
        .filter(|&i| i != leader)
        .map(|i| c.client_addr(i).to_string())
        .collect();
    // A new regency orders writes; the SIGKILLed leader sent no RST, so
    // the survivors notice by their requests' and links' timeouts.
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in 1..=20 {
        let (key, value) = (format!("k{k}"), format!("v{k}"));
        loop {
            let (ok, out) = etcdctl(&rest.join(","), &["put", &key, &value], None);
            if ok && out.contains("OK") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "put {key} after the leader died: {out}\n{}",
                c.log_tail((leader + 1) % 4)
            );
        }
    }
    let new_leader = c.leader(Duration::from_secs(10));
    assert_ne!(new_leader, leader, "a new regency took over");
    let rev = revision(&c, new_leader);
    for i in (0..4u16).filter(|&i| i != leader) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while revision(&c, i) < rev {
            assert!(Instant::now() < deadline, "replica {i} behind");
            std::thread::sleep(Duration::from_millis(20));
        }
        let at = c.client_addr(i).to_string();
        assert_eq!(
            ok_etcdctl(&at, &["get", "k20", "--print-value-only"]).trim(),
            "v20"
        );
    }
    let junk: u64 = (0..4u16)
        .filter(|&i| i != leader)
        .map(|i| {
            c.metric(
                i,
                "bftd_nic_rx_junk_drops_total{reason=\"not_ipv4_or_arp\"}",
            )
        })
        .sum();
    eprintln!("dpdk cluster: leader {leader} killed, {new_leader} leads; junk dropped {junk}");
}
