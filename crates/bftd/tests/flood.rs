//! Bad input from the network: a bounded flood of garbage datagrams and
//! junk connections at a replica's replica port neither crashes it nor
//! changes its state; frames with a bad tag or a bad signature (sent over a
//! link authenticated with a real replica key) are dropped and counted.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use bftd::config::Durability;
use common::*;
use rand::{Rng, SeedableRng};
use wire::{ClientId, Message, ReplicaId, Request, Signature};

fn flood_garbage(target: std::net::SocketAddr, seed: u64) -> (usize, usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let deadline = Instant::now() + Duration::from_secs(3);
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut datagrams = 0;
    for _ in 0..5_000 {
        if Instant::now() > deadline {
            break;
        }
        let len = rng.gen_range(1..1400);
        let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if udp.send_to(&junk, target).is_ok() {
            datagrams += 1;
        }
    }
    let mut connections = 0;
    for _ in 0..100 {
        if Instant::now() > deadline {
            break;
        }
        if let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_millis(500)) {
            let len = rng.gen_range(1..4096);
            let junk: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let _ = s.write_all(&junk);
            connections += 1;
        }
    }
    (datagrams, connections)
}

/// Connects to replica `to` as replica `as_id` (with its real key) and
/// returns the stream and the sealing key of the link.
fn connect_as(c: &Cluster, as_id: u16, to: u16) -> (TcpStream, wire::link::SealKey) {
    let secret = c.config.load_secret(as_id).unwrap();
    let keyring = c.config.keyring();
    let addr = c.config.replicas[to as usize].replica_addr;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (hello, dialing) = wire::link::dial(
        &secret,
        c.config.cluster_id,
        ReplicaId(as_id),
        ReplicaId(to),
    );
    s.write_all(&hello).unwrap();
    let mut reply = [0u8; wire::link::ACCEPT_HELLO_LEN];
    s.read_exact(&mut reply).unwrap();
    let (seal, confirm) = dialing
        .finish(&keyring, &reply)
        .expect("handshake with a real key");
    s.write_all(&confirm).unwrap();
    (s, seal)
}

fn send_frame(s: &mut TcpStream, seal: &mut wire::link::SealKey, msg: &[u8], tamper: bool) {
    let mut frame = Vec::new();
    seal.seal(msg, &mut frame);
    if tamper {
        let last = frame.len() - 1;
        frame[last] ^= 0x55;
    }
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    s.write_all(&out).unwrap();
}

#[test]
fn garbage_and_forged_frames_are_dropped_counted_and_change_nothing() {
    let mut c = Cluster::start("flood", 4, Durability::Memory);
    let ep = c.endpoints();
    ok_etcdctl(&ep[0], &["put", "before", "flood"]);
    let before = c.wait_converged(Duration::from_secs(10));

    let (datagrams, connections) = flood_garbage(c.config.replicas[0].replica_addr, 7);
    assert!(
        datagrams > 100 && connections > 10,
        "{datagrams} datagrams, {connections} connections"
    );

    // A correctly sealed frame from replica 3's key carrying a request of
    // client 1 with a garbage signature: the tag passes, the signature not.
    // (Replica 3 is stopped first, so its own redials cannot replace this
    // link before the frames are read; n = 4 keeps serving with 3.)
    c.kill(3);
    let (mut s, mut seal) = connect_as(&c, 3, 0);
    let forged = Message::Request(Request::new(
        ClientId(1),
        1 << 40,
        b"evil".to_vec(),
        Signature([9; 64]),
    ));
    send_frame(&mut s, &mut seal, &forged.encode(), false);
    // Then a frame whose tag was tampered with.
    let honest_looking = Message::Request(Request::new(
        ClientId(3),
        1 << 41,
        b"x".to_vec(),
        Signature([1; 64]),
    ));
    send_frame(&mut s, &mut seal, &honest_looking.encode(), true);
    drop(s);

    let deadline = Instant::now() + Duration::from_secs(10);
    let counted = |c: &Cluster| {
        c.metric(
            0,
            "bftd_dataplane_verify_drops_total{reason=\"bad_signature\"}",
        ) >= 1
            && c.metric(0, "bftd_dataplane_frame_drops_total{reason=\"bad_tag\"}") >= 1
    };
    while !counted(&c) {
        assert!(
            Instant::now() < deadline,
            "drops not counted:\n{}",
            c.http_get(0, "/metrics")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing changed, and the replica still serves and agrees.
    assert_eq!(c.wait_converged(Duration::from_secs(10)), before);
    assert_eq!(
        ok_etcdctl(&ep[0], &["get", "before", "--print-value-only"]),
        "flood\n"
    );
    ok_etcdctl(&ep[0], &["put", "after", "flood"]);
    let after = c.wait_converged(Duration::from_secs(20));
    assert_eq!(after.0, before.0 + 1);
}
