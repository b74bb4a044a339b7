//! Consensus-shaped traffic on loopback, epoll against io_uring: 4
//! replicas, one thread each (poll → open → answer → flush). Each round,
//! replica 0 broadcasts 1 KiB (a PROPOSE); every other replica answers
//! 64 B to all (a WRITE); the round ends at replica 0 with the third
//! answer. Reports round latency p50/p99 and rounds/s per backend.
//! Run: `cargo bench -p nic --bench alltoall` (release; bounded: ROUNDS
//! per case, every wait ends with an error after WAIT).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nic::{Io, OpenKey, RxEvent, RxPath, TcpConfig, TcpNic, TxPath};
use wire::{Keyring, ReplicaId, SecretKey};

const ROUNDS: usize = 20_000;
const WARMUP: usize = 1_000;
const N: usize = 4;
const WAIT: Duration = Duration::from_secs(120);
const PROPOSE_BYTES: usize = 1024;
const WRITE_BYTES: usize = 64;
/// Message kinds (first byte).
const KIND_PROPOSE: u8 = 1;
const KIND_WRITE: u8 = 2;
const KIND_STOP: u8 = 3;

fn nics(io: Io) -> Vec<TcpNic> {
    let ids: Vec<SecretKey> = (0..N)
        .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
        .collect();
    let ring = Arc::new(Keyring::new(
        1,
        ids.iter().map(|k| k.public()).collect(),
        HashMap::new(),
    ));
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let peers = (0..N)
                .filter(|&j| j != i)
                .map(|j| (ReplicaId(j as u16), addrs[j]))
                .collect();
            let mut c = TcpConfig::new(
                ReplicaId(i as u16),
                addrs[i],
                peers,
                ids[i].clone(),
                ring.clone(),
            );
            c.message_bytes_max = 64 * 1024;
            c.tx_buffer_bytes_max = 1 << 20;
            let nic = TcpNic::start_with_listener(c, l, io).unwrap();
            assert_eq!(nic.io(), io, "backend unavailable");
            nic
        })
        .collect()
}

/// One replica's loop; replica 0 returns its round times (ns) and the
/// measured wall time (ns) as the last element.
fn replica(i: usize, nic: TcpNic) -> Vec<u64> {
    let TcpNic {
        connector,
        mut rx,
        mut tx,
    } = nic;
    let mut keys: Vec<Option<Box<OpenKey>>> = (0..N).map(|_| None).collect();
    let propose = {
        let mut m = vec![0u8; PROPOSE_BYTES];
        m[0] = KIND_PROPOSE;
        m
    };
    let mut write = vec![0u8; WRITE_BYTES];
    write[0] = KIND_WRITE;
    let mut samples = Vec::with_capacity(ROUNDS + 1);
    let start = Instant::now();
    let mut links_up = 0;
    let mut answers = 0;
    let mut round = 0;
    let mut round_start = Instant::now();
    let mut bench_start = Instant::now();
    let mut stop = false;
    let mut started = i != 0;
    // Each iteration is one poll; bounded by WAIT.
    while !stop {
        assert!(
            start.elapsed() < WAIT,
            "replica {i} stalled in round {round}"
        );
        let mut kinds = [0usize; 4];
        rx.poll(256, 64, Duration::from_millis(100), &mut |ev| match ev {
            RxEvent::LinkUp { peer, open, .. } => {
                keys[peer.index()] = Some(open);
                links_up += 1;
            }
            RxEvent::Frame { peer, frame, .. } => {
                let key = keys[peer.index()].as_mut().expect("frame after LinkUp");
                let m = key.open(frame).expect("frame opens");
                kinds[m[0] as usize] += 1;
            }
            RxEvent::LinkDown { .. } => panic!("link down"),
        });
        if i != 0 {
            for _ in 0..kinds[KIND_PROPOSE as usize] {
                assert_eq!(tx.send_all(&write), N - 1);
            }
            stop = kinds[KIND_STOP as usize] > 0;
        } else {
            if !started && links_up == N - 1 {
                // Every peer's link to us is up; ours to them come up on
                // their own (sends wait unsealed until then).
                started = true;
                tx.send_all(&propose);
                round_start = Instant::now();
            }
            answers += kinds[KIND_WRITE as usize];
            if answers == N - 1 {
                answers = 0;
                round += 1;
                if round > WARMUP {
                    samples.push(round_start.elapsed().as_nanos() as u64);
                }
                if round == WARMUP {
                    bench_start = Instant::now();
                }
                if round == WARMUP + ROUNDS {
                    samples.push(bench_start.elapsed().as_nanos() as u64);
                    let mut m = vec![0u8; 16];
                    m[0] = KIND_STOP;
                    tx.send_all(&m);
                    stop = true;
                } else {
                    tx.send_all(&propose);
                    round_start = Instant::now();
                }
            }
            assert!(answers < N, "answers of one round only");
        }
        tx.flush();
    }
    // Let the STOP reach everyone before the sockets close.
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        tx.flush();
        thread::yield_now();
    }
    drop(connector);
    samples
}

/// Round times (sorted, ns) and rounds/s.
fn run(io: Io) -> (Vec<u64>, f64) {
    let handles: Vec<_> = nics(io)
        .into_iter()
        .enumerate()
        .map(|(i, nic)| thread::spawn(move || replica(i, nic)))
        .collect();
    let mut results: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut s = std::mem::take(&mut results[0]);
    let total_ns = s.pop().expect("wall time");
    s.sort_unstable();
    (s, ROUNDS as f64 / (total_ns as f64 / 1e9))
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    println!(
        "all-to-all rounds, n = {N} on loopback, {ROUNDS} rounds per row (after {WARMUP} warm-up)"
    );
    println!(
        "{:<34} | {:>9} {:>9} | {:>9}",
        "", "p50 µs", "p99 µs", "rounds/s"
    );
    println!("{}", "-".repeat(68));
    for (name, io) in [
        ("epoll rx + send(2) tx", Io::Epoll),
        ("io_uring rx + io_uring batched tx", Io::Uring),
    ] {
        let (s, rate) = run(io);
        println!(
            "{name:<34} | {:>9.1} {:>9.1} | {:>9.0}",
            percentile_us(&s, 0.50),
            percentile_us(&s, 0.99),
            rate
        );
    }
}
