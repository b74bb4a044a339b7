//! The receive pipeline over the in-memory transport and over TCP (epoll
//! and io_uring): signed messages reach the control queue verified;
//! tampered, forged and misrouted ones are dropped with the right counter,
//! and nothing else changes.

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::{DataplaneStats, Dest, Outbox, Receiver, RxConfig};
use nic::{Io, MemConfig, MemNetwork, MemRx, MemTx, TcpConfig, TcpNic, TxPath};
use wire::{
    Accept, ClientId, Digest, Keyring, Limits, Message, ReplicaId, Request, SecretKey, Signature,
    Signer, Verifier, Write,
};

const CLUSTER: u64 = 77;

fn secret(i: u16) -> SecretKey {
    SecretKey::from_seed([i as u8 + 1; 32])
}

fn keyring(n: u16) -> Arc<Keyring> {
    Arc::new(Keyring::new(
        CLUSTER,
        (0..n).map(|i| secret(i).public()).collect(),
        HashMap::new(),
    ))
}

struct Rig {
    /// Outboxes of replicas 1, 2, 3 (index 0 is replica 1).
    outboxes: Vec<Outbox<MemTx>>,
    receiver: Receiver<MemRx>,
    to_control: crossbeam_channel::Receiver<wire::Verified<Message>>,
    stats: Arc<DataplaneStats>,
}

/// Replica 0's receiver, and outboxes of replicas 1..4.
fn rig() -> Rig {
    let n = 4;
    let mut cfg = MemConfig::new(n as usize);
    cfg.identities = (0..n).map(secret).collect();
    cfg.keyring = keyring(n);
    let mut nodes = MemNetwork::with_config(cfg);
    let outboxes = nodes
        .drain(1..)
        .enumerate()
        .map(|(k, node)| {
            let i = k as u16 + 1;
            let signer = Signer::new(CLUSTER, ReplicaId(i), secret(i));
            Outbox::new(signer, node.tx, Arc::new(DataplaneStats::default()))
        })
        .collect();
    let stats = Arc::new(DataplaneStats::default());
    let (tx, rx) = crossbeam_channel::bounded(1024);
    let cfg = RxConfig {
        poll_timeout: Duration::from_millis(5),
        ..RxConfig::default()
    };
    let receiver = Receiver::new(
        nodes.pop().expect("replica 0").rx,
        n as usize,
        Verifier::new(keyring(n), 64),
        Limits::default(),
        cfg,
        tx,
        stats.clone(),
    );
    Rig {
        outboxes,
        receiver,
        to_control: rx,
        stats,
    }
}

impl Rig {
    /// Runs receive rounds until `want` messages reached the control queue
    /// or 200 rounds passed.
    fn collect(&mut self, want: usize) -> Vec<Message> {
        let mut got = Vec::new();
        for _ in 0..200 {
            for o in &mut self.outboxes {
                o.flush();
            }
            self.receiver.round().unwrap();
            got.extend(self.to_control.try_iter().map(|v| v.into_inner()));
            if got.len() >= want {
                break;
            }
        }
        got
    }
}

fn accept(r: u16, cid: u64) -> Message {
    Message::Accept(Accept {
        regency: 0,
        cid,
        replica: ReplicaId(r),
        digest: Digest([1; 32]),
        signature: Signature::PENDING,
    })
}

#[test]
fn signed_messages_arrive_verified_in_link_order() {
    let mut rig = rig();
    for cid in 1..=10 {
        rig.outboxes[0].send(Dest::All, accept(1, cid));
    }
    let req = Request::new(ClientId(2), 1, b"op".to_vec(), Signature::PENDING);
    let own = rig.outboxes[1].send_request(req);
    let got = rig.collect(11);
    assert_eq!(got.len(), 11);
    let cids: Vec<_> = got
        .iter()
        .filter_map(|m| match m {
            Message::Accept(a) => Some(a.cid),
            _ => None,
        })
        .collect();
    assert_eq!(cids, (1..=10).collect::<Vec<_>>());
    assert!(got.contains(own.get()));
    assert_eq!(
        rig.stats
            .messages_verified
            .load(std::sync::atomic::Ordering::Relaxed),
        11
    );
}

#[test]
fn an_own_copy_comes_back_only_for_destinations_including_self() {
    let mut rig = rig();
    let o = &mut rig.outboxes[0];
    assert!(o.send(Dest::All, accept(1, 1)).is_some());
    assert!(o.send(Dest::One(ReplicaId(1)), accept(1, 1)).is_some());
    assert!(o.send(Dest::One(ReplicaId(0)), accept(1, 1)).is_none());
    // Replica 0 (the only receiver alive) got All's frame and One(0)'s.
    let sent = o.tx().stats().snapshot();
    assert_eq!(sent.peer(ReplicaId(0)).tx_frames, 2);
    assert_eq!(sent.peer(ReplicaId(1)).tx_frames, 0, "nothing to self");
}

#[test]
fn bad_signatures_wrong_senders_and_garbage_are_dropped_and_counted() {
    let mut rig = rig();
    // A correctly sealed frame relaying replica 2's request with a garbage
    // signature (only the origin's own link vouches without one).
    let bad = Message::Request(Request::new(
        ClientId(2),
        1,
        b"op".to_vec(),
        Signature([5; 64]),
    ));
    rig.outboxes[0]
        .tx_mut()
        .send(ReplicaId(0), &bad.encode())
        .unwrap();
    // Replica 2 relaying a WRITE in replica 3's name.
    let w = Message::Write(Write {
        regency: 0,
        cid: 1,
        replica: ReplicaId(3),
        digest: Digest::ZERO,
    });
    rig.outboxes[1]
        .tx_mut()
        .send(ReplicaId(0), &w.encode())
        .unwrap();
    // Bytes that are not a message at all.
    rig.outboxes[2]
        .tx_mut()
        .send(ReplicaId(0), &[9u8; 40])
        .unwrap();
    // And one good message after all of that.
    rig.outboxes[0].send(Dest::All, accept(1, 2));
    let got = rig.collect(1);
    assert_eq!(
        got,
        vec![Signer::new(CLUSTER, ReplicaId(1), secret(1))
            .sign(accept(1, 2))
            .into_inner()]
    );
    assert_eq!(rig.stats.verify_drops("bad_signature"), 1);
    assert_eq!(rig.stats.verify_drops("wrong_sender"), 1);
    assert_eq!(
        rig.stats
            .decode_drops
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

/// Replica 1's outbox and replica 0's receiver over real TCP links.
fn tcp_pipeline(io: Io) {
    let ring = keyring(2);
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
                secret(i as u16),
                ring.clone(),
            );
            TcpNic::start_with_listener(c, l, io).unwrap()
        })
        .collect();
    let nic1 = nics.pop().unwrap();
    let nic0 = nics.pop().unwrap();
    let mut outbox = Outbox::new(
        Signer::new(CLUSTER, ReplicaId(1), secret(1)),
        nic1.tx,
        Arc::new(DataplaneStats::default()),
    );
    let stats = Arc::new(DataplaneStats::default());
    let (tx, to_control) = crossbeam_channel::bounded(4096);
    let cfg = RxConfig {
        poll_timeout: Duration::from_millis(5),
        ..RxConfig::default()
    };
    let mut receiver = Receiver::new(
        nic0.rx,
        2,
        Verifier::new(ring, 64),
        Limits::default(),
        cfg,
        tx,
        stats.clone(),
    );
    for cid in 0..1000 {
        outbox.send(Dest::All, accept(1, cid));
        if cid % 100 == 0 {
            outbox.flush();
        }
    }
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 1000 {
        assert!(Instant::now() < deadline, "got {} of 1000", got.len());
        outbox.flush();
        receiver.round().unwrap();
        got.extend(to_control.try_iter().map(|v| v.into_inner()));
    }
    let cids: Vec<u64> = got
        .iter()
        .map(|m| match m {
            Message::Accept(a) => a.cid,
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(cids, (0..1000).collect::<Vec<_>>());
    assert_eq!(stats.frame_drops("bad_sequence"), 0);
    drop((nic0.connector, nic1.connector));
}

#[test]
fn tcp_epoll_pipeline_delivers_verified_in_order() {
    tcp_pipeline(Io::Epoll);
}

#[test]
fn tcp_uring_pipeline_delivers_verified_in_order() {
    tcp_pipeline(Io::Uring);
}

/// Replica 0's receiver over TCP; the test speaks for replica 1 by hand.
/// A frame whose tag does not verify is dropped and its link reset (the
/// key stays at the bad frame, so the link could never deliver again); a
/// fresh handshake delivers again.
fn a_frame_with_a_bad_tag_resets_the_link(io: Io) {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use wire::link;

    let ring = keyring(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let c = TcpConfig::new(ReplicaId(0), addr, vec![], secret(0), ring.clone());
    let nic0 = TcpNic::start_with_listener(c, listener, io).unwrap();
    let nic_stats = nic::RxPath::stats(&nic0.rx).clone();
    let stats = Arc::new(DataplaneStats::default());
    let (tx, to_control) = crossbeam_channel::bounded(64);
    let cfg = RxConfig {
        poll_timeout: Duration::from_millis(5),
        ..RxConfig::default()
    };
    let mut receiver = Receiver::new(
        nic0.rx,
        2,
        Verifier::new(ring.clone(), 64),
        Limits::default(),
        cfg,
        tx,
        stats.clone(),
    );
    let signer = Signer::new(CLUSTER, ReplicaId(1), secret(1));
    let connect = || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (hello, dialing) = link::dial(&secret(1), CLUSTER, ReplicaId(1), ReplicaId(0));
        s.write_all(&hello).unwrap();
        let mut reply = [0u8; link::ACCEPT_HELLO_LEN];
        s.read_exact(&mut reply).unwrap();
        let (seal, confirm) = dialing.finish(&ring, &reply).unwrap();
        s.write_all(&confirm).unwrap();
        (s, seal)
    };
    let send = |s: &mut TcpStream, seal: &mut link::SealKey, cid: u64, tamper: bool| {
        let mut frame = Vec::new();
        seal.seal(
            &signer.sign(accept(1, cid)).into_inner().encode(),
            &mut frame,
        );
        if tamper {
            let last = frame.len() - 1;
            frame[last] ^= 1;
        }
        s.write_all(&(frame.len() as u32).to_be_bytes()).unwrap();
        s.write_all(&frame).unwrap();
    };
    let rounds_until =
        |receiver: &mut Receiver<nic::TcpRx>, what: &str, done: &dyn Fn() -> bool| {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done() {
                assert!(Instant::now() < deadline, "timed out waiting for {what}");
                receiver.round().unwrap();
            }
        };

    let (mut s, mut seal) = connect();
    send(&mut s, &mut seal, 1, false);
    send(&mut s, &mut seal, 2, true);
    send(&mut s, &mut seal, 3, false);
    rounds_until(&mut receiver, "the reset", &|| {
        nic_stats.snapshot().peer(ReplicaId(1)).bad_frame_resets == 1
    });
    // The transport closes the socket on the next poll.
    let mut buf = [0u8; 16];
    let closed = std::thread::spawn(move || loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    });
    rounds_until(&mut receiver, "the socket closed", &|| closed.is_finished());
    assert_eq!(stats.frame_drops("bad_tag"), 1);
    let got: Vec<Message> = to_control.try_iter().map(|v| v.into_inner()).collect();
    assert_eq!(got.len(), 1, "only the frame before the bad one");

    let (mut s, mut seal) = connect();
    send(&mut s, &mut seal, 4, false);
    let mut got = Vec::new();
    rounds_until(&mut receiver, "a message on the new link", &|| {
        !to_control.is_empty()
    });
    got.extend(to_control.try_iter().map(|v| v.into_inner()));
    assert!(
        matches!(&got[..], [Message::Accept(a)] if a.cid == 4),
        "{got:?}"
    );
    drop(nic0.connector);
}

#[test]
fn a_frame_with_a_bad_tag_resets_the_link_epoll() {
    a_frame_with_a_bad_tag_resets_the_link(Io::Epoll);
}

#[test]
fn a_frame_with_a_bad_tag_resets_the_link_uring() {
    a_frame_with_a_bad_tag_resets_the_link(Io::Uring);
}
