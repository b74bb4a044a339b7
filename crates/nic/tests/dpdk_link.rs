//! Replica links over DPDK between processes (one EAL per process): each
//! endpoint runs in its own network namespace on a `net_af_packet` port
//! over a veth pair whose other end sits on a bridge (see
//! `nic::dpdk::netns`). The test re-runs this binary as the endpoints
//! (`endpoint` below does nothing unless `BFTD_DPDK_ROLE` is set). Needs
//! root; skipped, saying so, otherwise.
#![cfg(feature = "dpdk")]

mod common;

use std::net::SocketAddrV4;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use common::{keys, message, r, Inbox};
use nic::dpdk::netns::NetLab;
use nic::dpdk::{DpdkConfig, DpdkNic};
use nic::{RxPath, TxPath};

const ROLE: &str = "BFTD_DPDK_ROLE";
const REPLICA_PORT: u16 = 7000;
/// Messages each endpoint sends each other one.
const COUNT: usize = 300;
const DEADLINE: Duration = Duration::from_secs(60);

/// EAL arguments of endpoint `i` on its namespace's `vd`.
fn eal_args(i: usize) -> Vec<String> {
    [
        "--no-huge",
        "--no-pci",
        "--no-shconf",
        "-m",
        "128",
        "-l",
        "0",
        &format!("--file-prefix=bftd-link-{i}-{}", std::process::id()),
        &format!("--vdev=net_af_packet0,iface={}", NetLab::IFACE),
        "--log-level=error",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn message_len(k: usize) -> usize {
    // Small ones and ones spanning several segments (and the ring's wrap).
    12 + (k * 997) % 40_000
}

/// One endpoint of `n`: sends `COUNT` messages to every other, checks it
/// gets theirs whole and in order, writes `dir/done-<i>`, and keeps its
/// links up until every endpoint is done.
#[test]
fn endpoint() {
    let Ok(role) = std::env::var(ROLE) else {
        return; // run by `links_carry_authenticated_frames_both_ways_in_order`
    };
    let parts: Vec<&str> = role.split(',').collect();
    let (i, n, dir): (usize, usize, PathBuf) = (
        parts[0].parse().unwrap(),
        parts[1].parse().unwrap(),
        parts[2].into(),
    );
    let (ids, ring) = keys(n);
    let addr = |j: usize| SocketAddrV4::new(NetLab::ip(j), REPLICA_PORT);
    let peers = (0..n)
        .filter(|&j| j != i)
        .map(|j| (r(j), addr(j)))
        .collect();
    let mut config = DpdkConfig::new(r(i), addr(i), peers, ids[i].clone(), ring, eal_args(i));
    config.port.port = "net_af_packet0".into();
    config.message_bytes_max = 64 * 1024;
    config.tx_buffer_bytes_max = 1 << 20;
    config.handshake_timeout_ms = 1000;
    let DpdkNic { mut rx, mut tx } = DpdkNic::start(config).expect("DPDK transport starts");
    let mut inbox = Inbox::default();
    for k in 0..COUNT {
        for j in (0..n).filter(|&j| j != i) {
            // Sent before the links are up: waits unsealed, in order.
            let m = message(i, j, k, message_len(k));
            let deadline = Instant::now() + DEADLINE;
            while let Err(e) = tx.send(r(j), &m) {
                assert!(Instant::now() < deadline, "send {k} to {j}: {e}");
                tx.flush();
                inbox.poll(&mut rx, 64, Duration::from_millis(1));
            }
        }
    }
    let deadline = Instant::now() + DEADLINE;
    let done = |ib: &Inbox| {
        (0..n)
            .filter(|&j| j != i)
            .all(|j| ib.from(r(j)).len() >= COUNT)
    };
    while !done(&inbox) {
        assert!(
            Instant::now() < deadline,
            "endpoint {i}: got {:?} of {COUNT}; stats {:?}",
            (0..n).map(|j| inbox.from(r(j)).len()).collect::<Vec<_>>(),
            rx.stats().snapshot()
        );
        tx.flush();
        inbox.poll(&mut rx, 64, Duration::from_millis(5));
    }
    for j in (0..n).filter(|&j| j != i) {
        let got = inbox.from(r(j));
        assert_eq!(got.len(), COUNT, "from {j}: nothing extra");
        for (k, m) in got.iter().enumerate() {
            assert_eq!(
                *m,
                &message(j, i, k, message_len(k))[..],
                "message {k} from {j}"
            );
        }
        let epochs: Vec<u64> = inbox
            .ups
            .iter()
            .filter(|u| u.0 == r(j))
            .map(|u| u.1)
            .collect();
        assert_eq!(epochs.len(), 1, "one link from {j}, never reset");
    }
    assert_eq!(inbox.unopened, 0, "every frame opened");
    let s = rx.stats().snapshot();
    eprintln!(
        "endpoint {i}: ok; junk dropped {:?}; port {:?}",
        s.rx_junk_drops,
        rx.port_counters()
    );
    std::fs::write(dir.join(format!("done-{i}")), b"").unwrap();
    let deadline = Instant::now() + DEADLINE;
    while !(0..n).all(|j| dir.join(format!("done-{j}")).exists()) {
        assert!(
            Instant::now() < deadline,
            "endpoint {i}: others never finished"
        );
        tx.flush();
        inbox.poll(&mut rx, 64, Duration::from_millis(5));
    }
}

/// Kills (by PID) and reaps children still running when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[test]
fn links_carry_authenticated_frames_both_ways_in_order() {
    if std::env::var(ROLE).is_ok() {
        return;
    }
    if !NetLab::is_root() {
        eprintln!("skipped: needs root to create network namespaces and veth pairs");
        return;
    }
    let n = 3;
    let lab = NetLab::create("link", n, false).expect("namespaces");
    let dir = std::env::temp_dir().join(format!("bftd-dpdk-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut children = Children(Vec::new());
    for i in 0..n {
        let child = lab
            .command(i, &exe)
            .args(["--exact", "endpoint", "--nocapture", "--test-threads=1"])
            .env(ROLE, format!("{i},{n},{}", dir.display()))
            .spawn()
            .expect("spawn endpoint");
        children.0.push(child);
    }
    let deadline = Instant::now() + DEADLINE + Duration::from_secs(10);
    for (i, c) in children.0.iter_mut().enumerate() {
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                assert!(status.success(), "endpoint {i} failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "endpoint {i} did not finish");
            std::thread::sleep(Duration::from_millis(20)); // polling a child's exit
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    drop(lab);
}
