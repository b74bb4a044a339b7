//! Steady-state WRITE/ACCEPT traffic allocates nothing per message:
//! Outbox (sign, encode, seal into the write buffer) → flush → the socket →
//! RxPath::poll (read into the link buffer) → open in place → decode.
//!
//! A counting global allocator, in a test binary of its own, counts the
//! allocations this thread makes after a warm-up. REQUEST and PROPOSE are
//! not part of it: they allocate their payloads once, in decode.
//!
//! The full `Receiver` round (adding the ed25519 batch verifier and the
//! control queue) is measured too: it allocates per verification batch, not
//! per message (`wire::Verifier::verify_batch` takes and returns vectors,
//! and ed25519-dalek's batch verification of ACCEPT signatures collects its
//! scalars); the assertion bounds that per batch.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::{DataplaneStats, Dest, Outbox, Receiver, RxConfig};
use nic::{Io, OpenKey, RxEvent, RxPath, TcpConfig, TcpNic, TcpRx, TcpTx};
use wire::{
    Accept, Digest, Keyring, Limits, Message, ReplicaId, SecretKey, Signature, Signer, Verifier,
    Write,
};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by this thread while running `f`.
fn allocations_in(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

const CLUSTER: u64 = 5;
const MESSAGES: u64 = 20_000;
const WARMUP: u64 = 2_000;
/// Messages sealed between two flushes (a round of the control loop).
const PER_FLUSH: u64 = 16;

fn secret(i: u16) -> SecretKey {
    SecretKey::from_seed([i as u8 + 40; 32])
}

/// Replica 1 → replica 0 over loopback TCP with backend `io`.
fn link(io: Io) -> (Outbox<TcpTx>, TcpRx, Vec<nic::Connector>, Arc<Keyring>) {
    let ring = Arc::new(Keyring::new(
        CLUSTER,
        (0..2).map(|i| secret(i).public()).collect(),
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
            let mut c = TcpConfig::new(
                ReplicaId(i as u16),
                addrs[i],
                vec![(ReplicaId(peer as u16), addrs[peer])],
                secret(i as u16),
                ring.clone(),
            );
            c.message_bytes_max = 64 * 1024;
            c.tx_buffer_bytes_max = 1 << 20;
            TcpNic::start_with_listener(c, l, io).unwrap()
        })
        .collect();
    let n1 = nics.pop().unwrap();
    let n0 = nics.pop().unwrap();
    let outbox = Outbox::new(
        Signer::new(CLUSTER, ReplicaId(1), secret(1)),
        n1.tx,
        Arc::new(DataplaneStats::default()),
    );
    (outbox, n0.rx, vec![n0.connector, n1.connector], ring)
}

/// WRITE and ACCEPT of replica 1, alternating.
fn vote(k: u64) -> Message {
    let digest = Digest([k as u8; 32]);
    if k & 1 == 0 {
        Message::Write(Write {
            regency: 0,
            cid: k,
            replica: ReplicaId(1),
            digest,
        })
    } else {
        Message::Accept(Accept {
            regency: 0,
            cid: k,
            replica: ReplicaId(1),
            digest,
            signature: Signature::PENDING,
        })
    }
}

/// Sends `count` votes from `first`, `PER_FLUSH` per flush, and runs
/// `receive` until it reports all of them.
fn pump(outbox: &mut Outbox<TcpTx>, first: u64, count: u64, mut receive: impl FnMut() -> u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut received = 0;
    for k in first..first + count {
        let own = outbox.send(Dest::All, vote(k));
        drop(own);
        if (k + 1) % PER_FLUSH == 0 {
            outbox.flush();
            while received < k + 1 - first {
                assert!(Instant::now() < deadline, "stalled at {received}");
                outbox.flush();
                received += receive();
            }
        }
    }
    assert_eq!(received, count);
}

/// TxPath → socket → RxPath::poll → open → decode: zero per message.
fn transport_open_decode(io: Io) {
    let (mut outbox, mut rx, _connectors, _) = link(io);
    let limits = Limits::default();
    let mut key: Option<Box<OpenKey>> = None;
    let mut receive = || {
        let mut got = 0;
        rx.poll(256, 64, Duration::from_millis(5), &mut |ev| match ev {
            RxEvent::LinkUp { open, .. } => key = Some(open),
            RxEvent::Frame { frame, .. } => {
                let key = key.as_mut().expect("frame after LinkUp");
                let plain = key.open(frame).expect("frame opens");
                let m = Message::decode(plain, &limits).expect("decodes");
                assert!(matches!(m, Message::Write(_) | Message::Accept(_)));
                got += 1;
            }
            RxEvent::LinkDown { .. } => panic!("link went down"),
        });
        got
    };
    pump(&mut outbox, 0, WARMUP, &mut receive);
    let n = allocations_in(|| pump(&mut outbox, WARMUP, MESSAGES, &mut receive));
    eprintln!(
        "{io:?}: send → flush → poll → open → decode: {n} allocations for {MESSAGES} messages"
    );
    assert_eq!(n, 0, "{io:?}: allocations on the message path");
}

/// The whole Receiver round, verifier and control queue included.
fn receiver_round(io: Io) {
    let (mut outbox, rx, _connectors, ring) = link(io);
    let (to_control, inbox) = crossbeam_channel::bounded(1024);
    let stats = Arc::new(DataplaneStats::default());
    let cfg = RxConfig {
        poll_timeout: Duration::from_millis(5),
        ..RxConfig::default()
    };
    let mut receiver = Receiver::new(
        rx,
        2,
        Verifier::new(ring, 64),
        Limits::default(),
        cfg,
        to_control,
        stats.clone(),
    );
    let mut receive = || {
        receiver.round().unwrap();
        inbox.try_iter().count() as u64
    };
    pump(&mut outbox, 0, WARMUP, &mut receive);
    let batches_before = stats.verify_batches.load(Ordering::Relaxed);
    let n = allocations_in(|| pump(&mut outbox, WARMUP, MESSAGES, &mut receive));
    let batches = stats.verify_batches.load(Ordering::Relaxed) - batches_before;
    eprintln!(
        "{io:?}: full Receiver round: {n} allocations for {MESSAGES} messages in {batches} \
         verify batches ({:.3} per message)",
        n as f64 / MESSAGES as f64
    );
    // Per verification batch, not per message: the vectors that
    // `Verifier::verify_batch` takes and returns (2-3), and ed25519-dalek's
    // batch verification of the ACCEPT signatures (about 20, growing with
    // log2 of the batch).
    assert!(n <= 32 * batches, "{n} allocations for {batches} batches");
}

#[test]
fn steady_state_votes_allocate_nothing_per_message() {
    for io in [Io::Epoll, Io::Uring] {
        transport_open_decode(io);
        receiver_round(io);
    }
}
