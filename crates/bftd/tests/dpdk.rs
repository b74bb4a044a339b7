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

/// Put latency of closed-loop writers (1 and 32) on DPDK replica links
/// beside the same cluster on kernel (io_uring) links, both clusters in
/// namespaces and up at once, runs interleaved. A measurement, not a
/// check: opt-in (`cargo test -p bftd --features dpdk --test dpdk --
/// --ignored --nocapture`), results in perf/results/2026-12-07/dpdk.md.
#[test]
#[ignore = "a measurement: run by hand with --ignored --nocapture"]
fn put_latency_on_dpdk_links_beside_kernel_links() {
    if !Netns::available() {
        eprintln!("skipped: needs root and iproute2 for network namespaces");
        return;
    }
    let netns = |dpdk| Opts {
        netns: true,
        dpdk,
        ..Opts::new(4)
    };
    let clusters = [
        ("io_uring", Cluster::start_with("lat-tcp", netns(false))),
        ("dpdk", Cluster::start_with("lat-dpdk", netns(true))),
    ];
    let run_for = Duration::from_secs(10);
    println!("| links | writers | ops/s | p50 ms | p99 ms | max ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for round in 0..2 {
        for writers in [1usize, 32] {
            for (name, c) in &clusters {
                let endpoints = if writers == 1 {
                    vec![c.endpoints()[0].clone()]
                } else {
                    c.endpoints()
                };
                let started = Instant::now();
                let w = Writers::start(endpoints, writers, &format!("/lat/{round}"), run_for);
                let r = w.join();
                let elapsed = started.elapsed().as_secs_f64();
                // Closed loop: each write's latency is the gap since the
                // writer's previous acknowledgement.
                let mut lat_us: Vec<u64> = r
                    .acked
                    .iter()
                    .flat_map(|a| a.windows(2).map(|p| (p[1].2 - p[0].2).as_micros() as u64))
                    .collect();
                lat_us.sort_unstable();
                let q = |f: f64| {
                    lat_us
                        .get(
                            ((lat_us.len() as f64 * f) as usize)
                                .min(lat_us.len().saturating_sub(1)),
                        )
                        .map_or(f64::NAN, |v| *v as f64 / 1e3)
                };
                println!(
                    "| {name} | {writers} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                    r.total() as f64 / elapsed,
                    q(0.5),
                    q(0.99),
                    lat_us.last().map_or(f64::NAN, |v| *v as f64 / 1e3),
                    r.errors.len()
                );
            }
        }
    }
}
