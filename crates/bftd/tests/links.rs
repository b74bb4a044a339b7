//! Issue "Byzantine-safe for real", finding 7, on real processes: a
//! captured HELLO replayed at a replica port, and idle unauthenticated
//! sockets holding its handshake slots, change nothing — no leader change,
//! no lost write, and a restarting replica still gets its links back.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use wire::link;
use wire::ReplicaId;

fn regency(c: &Cluster, i: u16) -> u64 {
    c.status(i)["regency"].as_u64().unwrap()
}

/// The sum of the metric samples of replica `i` whose line contains every
/// one of `parts`.
fn metric_sum(c: &Cluster, i: u16, parts: &[&str]) -> u64 {
    c.http_get(i, "/metrics")
        .lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[test]
fn a_replayed_hello_and_64_idle_sockets_on_a_link_port_change_nothing() {
    let mut c = Cluster::start_with("links", Opts::new(4));
    let leader = c.leader(Duration::from_secs(5));
    let target = leader;
    let addr = c.config.replicas[target as usize].replica_addr;
    let regency_before = regency(&c, leader);
    let backup = (target + 2) % 4;
    let writers_at: Vec<String> = (0..4u16)
        .filter(|&i| i != backup)
        .map(|i| c.client_addr(i).to_string())
        .collect();
    let w = Writers::start(writers_at, 8, "ln", Duration::from_secs(60));

    // 64 idle unauthenticated sockets on the leader's replica port.
    let idle: Vec<TcpStream> = (0..64)
        .map(|_| TcpStream::connect(addr).expect("connect to the replica port"))
        .collect();

    // A HELLO of replica `from` to the leader, captured once (plaintext on
    // the wire), then replayed 50 times at 50 per second.
    let from = (target + 1) % 4;
    let secret = c.config.load_secret(from).unwrap();
    let (hello, _dialing) = link::dial(
        &secret,
        c.config.cluster_id,
        ReplicaId(from),
        ReplicaId(target),
    );
    let mut challenged = 0;
    for _ in 0..50 {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(&hello).unwrap();
        let mut reply = [0u8; link::ACCEPT_HELLO_LEN];
        if s.read_exact(&mut reply).is_ok() {
            challenged += 1; // a fresh challenge: without the key, no CONFIRM
        }
        // The replay cannot answer: send garbage as its CONFIRM.
        let _ = s.write_all(&[0u8; link::CONFIRM_LEN]);
        drop(s);
        std::thread::sleep(Duration::from_millis(20).saturating_sub(started.elapsed()));
        // the attack's pace, not synchronisation
    }
    assert!(challenged > 0, "the leader answered no replayed HELLO");

    // A backup restarts while the idle sockets are still open: it gets its
    // links back and serves writes.
    c.kill(backup);
    c.start_replica(backup);
    c.wait_serving(backup, Duration::from_secs(30));
    ok_etcdctl(
        &c.client_addr(backup).to_string(),
        &["put", "after-restart", "ok"],
    );
    drop(idle);

    let r = w.stop();
    assert!(
        r.errors.is_empty(),
        "{} errors, first {:?}",
        r.errors.len(),
        r.errors.first()
    );
    assert_eq!(
        regency(&c, leader),
        regency_before,
        "a leader change happened"
    );
    let refused = metric_sum(&c, target, &["handshake_failures", "bad_confirm"]);
    assert!(refused >= 1, "no replayed HELLO was refused at its CONFIRM");
    assert_eq!(
        metric_sum(&c, target, &["connections_replaced"]),
        0,
        "a replayed HELLO replaced a live link"
    );
    c.wait_converged(Duration::from_secs(30));
    r.assert_none_lost(&c.client_addr(0).to_string(), "ln/");
}
