//! Round-trip latency on loopback: UDP and TCP blocking sockets against
//! TcpNic end to end on each backend (send → flush → the socket → poll →
//! open → send back; no nic threads in between). Run:
//! `cargo bench -p nic --bench pingpong`.
//!
//! Every round trip is bounded (one message each way, N per case), and
//! each wait ends with an error after `WAIT`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use nic::{Io, OpenKey, RxEvent, RxPath, TcpConfig, TcpNic, TxPath};
use wire::{Keyring, ReplicaId, SecretKey};

const ROUND_TRIPS: usize = 20_000;
const WARMUP: usize = 1_000;
const SIZES: [usize; 2] = [64, 4096];
const WAIT: Duration = Duration::from_secs(10);

/// Round-trip times, ns, of the measured (post-warm-up) trips.
type Samples = Vec<u64>;

/// One row of the table: measures round trips of messages of a size.
type Case = fn(usize) -> Samples;

fn udp(size: usize) -> Samples {
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    server.set_read_timeout(Some(WAIT)).unwrap();
    let addr = server.local_addr().unwrap();
    let echo = thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        for _ in 0..WARMUP + ROUND_TRIPS {
            let (len, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..len], from).unwrap();
        }
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.connect(addr).unwrap();
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; 65536];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        client.send(&msg).unwrap();
        let len = client.recv(&mut buf).unwrap();
        assert_eq!(len, size);
        if i >= WARMUP {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    echo.join().unwrap();
    samples
}

fn tcp(size: usize) -> Samples {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut buf = vec![0u8; size];
        for _ in 0..WARMUP + ROUND_TRIPS {
            s.read_exact(&mut buf).unwrap();
            s.write_all(&buf).unwrap();
        }
    });
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let msg = vec![7u8; size];
    let mut buf = vec![0u8; size];
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        client.write_all(&msg).unwrap();
        client.read_exact(&mut buf).unwrap();
        if i >= WARMUP {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    echo.join().unwrap();
    samples
}

/// Polls `rx` until the next opened message; keeps link keys in `keys`.
fn next_message<R: RxPath>(
    rx: &mut R,
    keys: &mut HashMap<ReplicaId, Box<OpenKey>>,
    out: &mut Vec<u8>,
) -> ReplicaId {
    let deadline = Instant::now() + WAIT;
    let mut from = None;
    // Each iteration is one poll, bounded by the deadline.
    while from.is_none() {
        let now = Instant::now();
        assert!(now < deadline, "no message within {WAIT:?}");
        rx.poll(1, 1, deadline - now, &mut |event| match event {
            RxEvent::LinkUp { peer, open, .. } => {
                keys.insert(peer, open);
            }
            RxEvent::Frame { peer, frame, .. } => {
                let key = keys.get_mut(&peer).expect("frame before LinkUp");
                out.clear();
                out.extend_from_slice(key.open(frame).expect("frame opens"));
                from = Some(peer);
            }
            RxEvent::LinkDown { .. } => panic!("link went down"),
        });
    }
    from.expect("loop ends with a message")
}

fn transport(io: Io, size: usize) -> Samples {
    let ids: Vec<SecretKey> = (0..2)
        .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
        .collect();
    let ring = Arc::new(Keyring::new(
        1,
        ids.iter().map(|k| k.public()).collect(),
        HashMap::new(),
    ));
    let listeners: Vec<TcpListener> = (0..2)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nics: Vec<TcpNic> = listeners
        .into_iter()
        .enumerate()
        .map(|(i, l)| {
            let peer = 1 - i;
            let c = TcpConfig::new(
                ReplicaId(i as u16),
                addrs[i],
                vec![(ReplicaId(peer as u16), addrs[peer])],
                ids[i].clone(),
                ring.clone(),
            );
            let nic = TcpNic::start_with_listener(c, l, io).unwrap();
            assert_eq!(nic.io(), io, "backend unavailable");
            nic
        })
        .collect();
    // Both links up before the first trip (a send before that waits
    // unsealed until a flush after the link is up).
    let deadline = Instant::now() + WAIT;
    while !nics.iter().all(|n| {
        let s = n.rx.stats().snapshot();
        s.connections_dialed == 1 && s.connections_accepted == 1
    }) {
        assert!(Instant::now() < deadline, "links did not come up");
        thread::yield_now();
    }
    let nic1 = nics.pop().unwrap();
    let nic0 = nics.pop().unwrap();
    let echo = thread::spawn(move || {
        let TcpNic {
            connector,
            mut rx,
            mut tx,
        } = nic1;
        let mut keys = HashMap::new();
        let mut m = Vec::new();
        for _ in 0..WARMUP + ROUND_TRIPS {
            let peer = next_message(&mut rx, &mut keys, &mut m);
            tx.send(peer, &m).unwrap();
            tx.flush();
        }
        (connector, rx, tx)
    });
    let TcpNic {
        connector,
        mut rx,
        mut tx,
    } = nic0;
    let msg = vec![7u8; size];
    let mut keys = HashMap::new();
    let mut m = Vec::new();
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let t = Instant::now();
        tx.send(ReplicaId(1), &msg).unwrap();
        tx.flush();
        next_message(&mut rx, &mut keys, &mut m);
        assert_eq!(m.len(), size);
        if i >= WARMUP {
            samples.push(t.elapsed().as_nanos() as u64);
        }
    }
    drop(echo.join().unwrap());
    drop((connector, rx, tx));
    samples
}

fn epoll(size: usize) -> Samples {
    transport(Io::Epoll, size)
}

fn uring(size: usize) -> Samples {
    transport(Io::Uring, size)
}

fn percentile_us(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

fn main() {
    let cases: [(&str, Case); 4] = [
        ("UDP, blocking sockets", udp),
        ("TCP, blocking, TCP_NODELAY", tcp),
        ("TcpNic epoll end to end", epoll),
        ("TcpNic io_uring end to end", uring),
    ];
    println!("round trip on loopback, {ROUND_TRIPS} trips per cell (after {WARMUP} warm-up), µs");
    println!(
        "{:<30} | {:>9} {:>9} | {:>9} {:>9}",
        "", "64 B p50", "64 B p99", "4 KiB p50", "4 KiB p99"
    );
    println!("{}", "-".repeat(74));
    for (name, run) in cases {
        let mut row = format!("{name:<30} |");
        for size in SIZES {
            let mut s = run(size);
            s.sort_unstable();
            row += &format!(
                " {:>9.1} {:>9.1} |",
                percentile_us(&s, 0.50),
                percentile_us(&s, 0.99)
            );
        }
        println!("{}", row.trim_end_matches('|'));
    }
}
