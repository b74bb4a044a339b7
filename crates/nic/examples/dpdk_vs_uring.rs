//! DPDK links against io_uring TCP links on the same wire: every endpoint
//! runs in its own network namespace on a veth whose other end is on one
//! bridge (`nic::dpdk::netns`); DPDK drives the veth with `net_af_packet`,
//! TCP uses the kernel's stack on it. Printed side by side:
//! - ping-pong: 64-byte message there and back between two endpoints,
//!   round-trip p50/p99 over 5,000 rounds;
//! - all-to-all: 4 endpoints; endpoint 0 broadcasts a 1 KiB message, each
//!   other endpoint answers every endpoint with 64 bytes (consensus-shaped),
//!   16 rounds in flight; rounds per second and round p50.
//!
//! `sudo cargo run --release -p nic --features dpdk --example dpdk_vs_uring`
//! (root: namespaces). A benchmark, not a test: numbers depend on the
//! machine.

use std::net::{SocketAddr, SocketAddrV4};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nic::dpdk::netns::NetLab;
use nic::dpdk::{DpdkConfig, DpdkNic};
use nic::{Io, OpenKey, RxEvent, RxPath, TcpConfig, TcpNic, TxPath};
use wire::{Keyring, ReplicaId, SecretKey};

const ROLE: &str = "BFTD_BENCH_ROLE";
const PORT: u16 = 7000;
const PINGS: usize = 5000;
const ROUNDS: usize = 20_000;
const WINDOW: usize = 16;

fn keys(n: usize) -> (Vec<SecretKey>, Arc<Keyring>) {
    let ids: Vec<SecretKey> = (0..n)
        .map(|i| SecretKey::from_seed([i as u8 + 9; 32]))
        .collect();
    let ring = Keyring::new(
        7,
        ids.iter().map(|k| k.public()).collect(),
        Default::default(),
    );
    (ids, Arc::new(ring))
}

/// Opens frames with the keys of their links; collects plaintexts.
#[derive(Default)]
struct Opened {
    keys: Vec<Option<(u64, Box<OpenKey>)>>,
    got: Vec<(u16, Vec<u8>)>,
}

impl Opened {
    fn handle(&mut self, e: RxEvent<'_>) {
        match e {
            RxEvent::LinkUp { peer, epoch, open } => {
                if self.keys.len() <= peer.index() {
                    self.keys.resize_with(peer.index() + 1, || None);
                }
                self.keys[peer.index()] = Some((epoch, open));
            }
            RxEvent::Frame { peer, epoch, frame } => {
                if let Some(Some((e, k))) = self.keys.get_mut(peer.index()) {
                    if *e == epoch {
                        if let Ok(m) = k.open(frame) {
                            self.got.push((peer.0, m.to_vec()));
                        }
                    }
                }
            }
            RxEvent::LinkDown { .. } => {}
        }
    }
}

fn run<R: RxPath, T: TxPath>(mut rx: R, mut tx: T, i: usize, n: usize, mode: &str) {
    let mut o = Opened::default();
    let pump = |rx: &mut R, tx: &mut T, o: &mut Opened| {
        tx.flush();
        rx.poll(256, 64, Duration::from_millis(1), &mut |e| o.handle(e));
    };
    // Wait for every link: everyone sends a hello to everyone.
    for j in (0..n).filter(|&j| j != i) {
        tx.send(ReplicaId(j as u16), b"hi").unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while o.got.iter().filter(|m| m.1 == b"hi").count() < n - 1 {
        assert!(Instant::now() < deadline, "links did not come up");
        pump(&mut rx, &mut tx, &mut o);
    }
    // Keep what the others sent after their own hellos.
    o.got.retain(|m| m.1 != b"hi");
    let stop = |m: &[u8]| m == b"stop";
    if i != 0 {
        // Answer until endpoint 0 says stop.
        loop {
            pump(&mut rx, &mut tx, &mut o);
            let msgs = std::mem::take(&mut o.got);
            for (from, m) in msgs {
                if stop(&m) {
                    // Keep the link up long enough for the stop of others.
                    let end = Instant::now() + Duration::from_millis(200);
                    while Instant::now() < end {
                        pump(&mut rx, &mut tx, &mut o);
                    }
                    return;
                }
                match mode {
                    "pingpong" => {
                        let _ = tx.send(ReplicaId(from), &m);
                    }
                    _ if from == 0 => {
                        let mut answer = m[..8].to_vec();
                        answer.resize(64, 1);
                        for j in (0..n).filter(|&j| j != i) {
                            let _ = tx.send(ReplicaId(j as u16), &answer);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let mut lat: Vec<Duration> = Vec::new();
    let t0 = Instant::now();
    match mode {
        "pingpong" => {
            for k in 0..PINGS + 500 {
                let m = (k as u64).to_le_bytes().repeat(8);
                let start = Instant::now();
                tx.send(ReplicaId(1), &m).unwrap();
                let deadline = Instant::now() + Duration::from_secs(10);
                while o.got.is_empty() {
                    assert!(Instant::now() < deadline, "ping {k} got no answer");
                    pump(&mut rx, &mut tx, &mut o);
                }
                o.got.clear();
                if k >= 500 {
                    lat.push(start.elapsed());
                }
            }
        }
        _ => {
            let mut started: Vec<Instant> = Vec::with_capacity(ROUNDS);
            let mut answers = vec![0usize; ROUNDS];
            let mut done = 0;
            let mut next = 0;
            let deadline = Instant::now() + Duration::from_secs(120);
            while done < ROUNDS {
                assert!(Instant::now() < deadline, "{done} of {ROUNDS} rounds");
                while next < ROUNDS && next < done + WINDOW {
                    let mut m = (next as u64).to_le_bytes().to_vec();
                    m.resize(1024, 2);
                    for j in 1..n {
                        if tx.send(ReplicaId(j as u16), &m).is_err() {
                            break;
                        }
                    }
                    started.push(Instant::now());
                    next += 1;
                }
                pump(&mut rx, &mut tx, &mut o);
                for (_, m) in std::mem::take(&mut o.got) {
                    let k = u64::from_le_bytes(m[..8].try_into().unwrap()) as usize;
                    answers[k] += 1;
                    if answers[k] == n - 1 {
                        lat.push(started[k].elapsed());
                        done += 1;
                    }
                }
            }
        }
    }
    let elapsed = t0.elapsed();
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "RESULT p50_us={:.1} p99_us={:.1} per_s={:.0}",
        p(0.5).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6,
        lat.len() as f64 / elapsed.as_secs_f64()
    );
    for j in 1..n {
        let _ = tx.send(ReplicaId(j as u16), b"stop");
    }
    let end = Instant::now() + Duration::from_millis(300);
    while Instant::now() < end {
        pump(&mut rx, &mut tx, &mut o);
    }
}

fn endpoint(role: &str) {
    let p: Vec<&str> = role.split(',').collect();
    let (transport, mode, i, n, idle): (&str, &str, usize, usize, u64) = (
        p[0],
        p[1],
        p[2].parse().unwrap(),
        p[3].parse().unwrap(),
        p[4].parse().unwrap(),
    );
    let (ids, ring) = keys(n);
    let addr = |j: usize| SocketAddrV4::new(NetLab::ip(j), PORT);
    let me = ReplicaId(i as u16);
    if transport == "dpdk" {
        let peers = (0..n)
            .filter(|&j| j != i)
            .map(|j| (ReplicaId(j as u16), addr(j)))
            .collect();
        let eal: Vec<String> = [
            "--no-huge",
            "--no-pci",
            "--no-shconf",
            "-m",
            "256",
            "-l",
            &(i % 2).to_string(),
            &format!("--file-prefix=bench{i}{}", std::process::id()),
            &format!("--vdev=net_af_packet0,iface={}", NetLab::IFACE),
            "--log-level=error",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut c = DpdkConfig::new(me, addr(i), peers, ids[i].clone(), ring, eal);
        c.port.port = "net_af_packet0".into();
        c.message_bytes_max = 64 * 1024;
        c.tx_buffer_bytes_max = 4 << 20;
        c.poll_idle_us = idle;
        let nic = DpdkNic::start(c).unwrap();
        run(nic.rx, nic.tx, i, n, mode);
    } else {
        let peers = (0..n)
            .filter(|&j| j != i)
            .map(|j| (ReplicaId(j as u16), SocketAddr::V4(addr(j))))
            .collect();
        let mut c = TcpConfig::new(me, SocketAddr::V4(addr(i)), peers, ids[i].clone(), ring);
        c.message_bytes_max = 64 * 1024;
        c.tx_buffer_bytes_max = 4 << 20;
        let nic = TcpNic::start(c, Io::Uring).unwrap();
        let _connector = nic.connector;
        run(nic.rx, nic.tx, i, n, mode);
    }
}

fn measure(transport: &str, mode: &str, n: usize, idle: u64) -> String {
    let lab = NetLab::create("bench", n, transport != "dpdk").expect("namespaces (root?)");
    let exe = std::env::current_exe().unwrap();
    let mut children: Vec<_> = (0..n)
        .map(|i| {
            let mut c: Command = lab.command(i, &exe);
            c.env(ROLE, format!("{transport},{mode},{i},{n},{idle}"));
            if i == 0 {
                c.stdout(std::process::Stdio::piped());
            }
            c.spawn().unwrap()
        })
        .collect();
    let out = children.remove(0).wait_with_output().unwrap();
    for mut c in children {
        let _ = c.wait();
    }
    drop(lab);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .unwrap_or("RESULT failed")
        .trim_start_matches("RESULT ")
        .to_string()
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        return endpoint(&role);
    }
    println!("| benchmark | io_uring TCP (kernel, veth) | DPDK af_packet + smoltcp (veth) |");
    println!("|---|---|---|");
    println!(
        "| ping-pong 64 B, 2 endpoints | {} | {} (spin) |",
        measure("uring", "pingpong", 2, 0),
        measure("dpdk", "pingpong", 2, 0)
    );
    println!(
        "| all-to-all 1 KiB + 64 B answers, 4 endpoints, 16 rounds in flight | {} | {} (idle sleep 20 µs) |",
        measure("uring", "alltoall", 4, 0),
        measure("dpdk", "alltoall", 4, 20)
    );
}
