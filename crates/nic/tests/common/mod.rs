//! Test helpers: clusters on loopback and an inbox that opens frames with
//! the keys from `LinkUp`, as the dataplane does.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nic::{
    Connector, Io, MemNode, OpenKey, RxEvent, RxPath, TcpConfig, TcpNic, TcpRx, TcpTx, TxPath,
};
use wire::link::{self, SealKey, ACCEPT_HELLO_LEN};
use wire::{Keyring, ReplicaId, SecretKey};

pub const CLUSTER_ID: u64 = 0xb5d;
/// Every wait in the tests ends by this deadline.
pub const WAIT: Duration = Duration::from_secs(20);
/// One poll's wait inside a wait loop (senders are flushed between polls).
const POLL_SLICE: Duration = Duration::from_millis(5);

pub fn keys(n: usize) -> (Vec<SecretKey>, Arc<Keyring>) {
    let ids: Vec<SecretKey> = (0..n)
        .map(|i| SecretKey::from_seed([i as u8 + 7; 32]))
        .collect();
    let ring = Keyring::new(
        CLUSTER_ID,
        ids.iter().map(|k| k.public()).collect(),
        HashMap::new(),
    );
    (ids, Arc::new(ring))
}

pub fn r(i: usize) -> ReplicaId {
    ReplicaId(i as u16)
}

/// A loopback address nothing listens on (bound, then released).
pub fn dead_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// One replica's transport, split as the replica splits it.
pub struct Node<R: RxPath, T: TxPath> {
    /// TCP only; dropping it stops the connector. Declared first so a
    /// dropped node stops accepting before its links close (fields drop in
    /// order), as a crashed process does.
    pub connector: Option<Connector>,
    pub rx: R,
    pub tx: T,
    pub inbox: Inbox,
}

pub type TcpNode = Node<TcpRx, TcpTx>;

impl From<TcpNic> for TcpNode {
    fn from(nic: TcpNic) -> Self {
        Node {
            rx: nic.rx,
            tx: nic.tx,
            connector: Some(nic.connector),
            inbox: Inbox::default(),
        }
    }
}

impl From<MemNode> for Node<nic::MemRx, nic::MemTx> {
    fn from(m: MemNode) -> Self {
        Node {
            rx: m.rx,
            tx: m.tx,
            connector: None,
            inbox: Inbox::default(),
        }
    }
}

pub struct Cluster {
    pub ids: Vec<SecretKey>,
    pub ring: Arc<Keyring>,
    pub addrs: Vec<SocketAddr>,
    pub io: Io,
}

impl Cluster {
    /// Keys for `n` replicas and listeners for the first `running`; the
    /// others get addresses nobody listens on.
    pub fn bind(n: usize, running: usize, io: Io) -> (Self, Vec<TcpListener>) {
        let (ids, ring) = keys(n);
        let listeners: Vec<TcpListener> = (0..running)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut addrs: Vec<SocketAddr> =
            listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        addrs.extend((running..n).map(|_| dead_addr()));
        (
            Self {
                ids,
                ring,
                addrs,
                io,
            },
            listeners,
        )
    }

    pub fn config(&self, i: usize) -> TcpConfig {
        let peers = (0..self.addrs.len())
            .filter(|&j| j != i)
            .map(|j| (r(j), self.addrs[j]))
            .collect();
        let mut c = TcpConfig::new(
            r(i),
            self.addrs[i],
            peers,
            self.ids[i].clone(),
            self.ring.clone(),
        );
        c.handshake_timeout_ms = 500;
        c.reconnect_backoff_ms_max = 200;
        c
    }

    pub fn node(&self, config: TcpConfig, listener: TcpListener) -> TcpNode {
        let nic = TcpNic::start_with_listener(config, listener, self.io).unwrap();
        check_backend(&nic, self.io);
        nic.into()
    }

    pub fn start(n: usize, io: Io, tweak: impl Fn(&mut TcpConfig)) -> (Self, Vec<TcpNode>) {
        let (cluster, listeners) = Self::bind(n, n, io);
        let nodes = listeners
            .into_iter()
            .enumerate()
            .map(|(i, l)| {
                let mut c = cluster.config(i);
                tweak(&mut c);
                cluster.node(c, l)
            })
            .collect();
        (cluster, nodes)
    }
}

impl Cluster {
    /// Dials replica `to` as replica `from` (with its real key), runs the
    /// whole handshake (HELLO, reply, CONFIRM) by hand, and returns the
    /// socket and the key that seals frames on it.
    pub fn connect_as(&self, from: usize, to: usize) -> (TcpStream, SealKey) {
        let mut s = TcpStream::connect(self.addrs[to]).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let (hello, dialing) = link::dial(&self.ids[from], CLUSTER_ID, r(from), r(to));
        s.write_all(&hello).unwrap();
        let mut reply = [0u8; ACCEPT_HELLO_LEN];
        s.read_exact(&mut reply).unwrap();
        let (seal, confirm) = dialing.finish(&self.ring, &reply).unwrap();
        s.write_all(&confirm).unwrap();
        (s, seal)
    }
}

/// Writes one frame carrying `message`, sealed with `seal`, with its length
/// prefix; `tamper` flips a bit of its tag.
pub fn send_frame(s: &mut TcpStream, seal: &mut SealKey, message: &[u8], tamper: bool) {
    let mut frame = Vec::new();
    seal.seal(message, &mut frame);
    if tamper {
        let last = frame.len() - 1;
        frame[last] ^= 1;
    }
    let mut out = (frame.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&frame);
    s.write_all(&out).unwrap();
}

/// The backend asked for is the one running (io_uring may be refused by the
/// kernel: then the test says so and runs on epoll).
pub fn check_backend(nic: &TcpNic, io: Io) {
    if nic.io() != io {
        eprintln!("note: {io:?} unavailable here, running on {:?}", nic.io());
    }
}

/// What one replica received, opened. Like the dataplane, a frame of the
/// current link that does not open gets the link reset after the poll.
#[derive(Default)]
pub struct Inbox {
    keys: HashMap<ReplicaId, (u64, Box<OpenKey>)>,
    /// (peer, epoch, plaintext), in delivery order.
    pub messages: Vec<(ReplicaId, u64, Vec<u8>)>,
    pub ups: Vec<(ReplicaId, u64)>,
    pub downs: Vec<(ReplicaId, u64)>,
    /// Frames that did not open (stale epoch or bad frame).
    pub unopened: usize,
    pub events: usize,
    /// Links (peer, epoch) to reset after this poll: a frame did not open.
    pub resets: Vec<(ReplicaId, u64)>,
}

impl Inbox {
    pub fn handle(&mut self, event: RxEvent<'_>) {
        self.events += 1;
        match event {
            RxEvent::LinkUp { peer, epoch, open } => {
                assert_eq!(open.peer(), peer);
                if let Some((old, _)) = self.keys.get(&peer) {
                    assert!(epoch > *old, "epochs increase");
                }
                self.ups.push((peer, epoch));
                self.keys.insert(peer, (epoch, open));
            }
            RxEvent::Frame { peer, epoch, frame } => match self.keys.get_mut(&peer) {
                Some((e, key)) if *e == epoch => match key.open(frame) {
                    Ok(m) => self.messages.push((peer, epoch, m.to_vec())),
                    Err(_) => {
                        self.unopened += 1;
                        if !self.resets.contains(&(peer, epoch)) {
                            self.resets.push((peer, epoch));
                        }
                    }
                },
                _ => self.unopened += 1,
            },
            RxEvent::LinkDown { peer, epoch } => self.downs.push((peer, epoch)),
        }
    }

    /// One poll of `rx` into this inbox, then the resets it asks for.
    pub fn poll<R: RxPath>(&mut self, rx: &mut R, budget: usize, timeout: Duration) -> usize {
        let got = rx.poll(256, budget, timeout, &mut |e| self.handle(e));
        for (peer, epoch) in self.resets.drain(..) {
            rx.reset_link(peer, epoch);
        }
        got
    }

    pub fn from(&self, peer: ReplicaId) -> Vec<&[u8]> {
        self.messages
            .iter()
            .filter(|m| m.0 == peer)
            .map(|m| m.2.as_slice())
            .collect()
    }

    pub fn current_epoch(&self, peer: ReplicaId) -> Option<u64> {
        self.keys.get(&peer).map(|k| k.0)
    }
}

/// Flushes every sender, then polls replica `j` until `done(inbox)`;
/// panics after [`WAIT`].
pub fn wait<R: RxPath, T: TxPath>(
    nodes: &mut [Node<R, T>],
    j: usize,
    what: &str,
    done: impl Fn(&Inbox) -> bool,
) {
    let deadline = Instant::now() + WAIT;
    while !done(&nodes[j].inbox) {
        if Instant::now() >= deadline {
            let ib = &nodes[j].inbox;
            let counts: Vec<usize> = (0..nodes.len()).map(|i| ib.from(r(i)).len()).collect();
            let tx: Vec<_> = nodes
                .iter()
                .map(|n| n.tx.stats().snapshot().peer(r(j)))
                .collect();
            panic!(
                "timed out waiting for {what} at replica {j}: per peer {counts:?}, ups {:?}, \
                 downs {:?}, unopened {}; senders' counters towards {j}: {tx:?}; \
                 receiver: {:?}",
                ib.ups,
                ib.downs,
                ib.unopened,
                nodes[j].rx.stats().snapshot()
            );
        }
        for n in nodes.iter_mut() {
            n.tx.flush();
        }
        let node = &mut nodes[j];
        node.inbox.poll(&mut node.rx, 64, POLL_SLICE);
    }
}

/// Waits until every replica has a link up from every other.
pub fn wait_links_up<R: RxPath, T: TxPath>(nodes: &mut [Node<R, T>]) {
    let n = nodes.len();
    for j in 0..n {
        wait(nodes, j, "links up", |ib| {
            (0..n)
                .filter(|&i| i != j)
                .all(|i| ib.current_epoch(r(i)).is_some())
        });
    }
}

/// Message `k` from `i` to `j`: a header then filler, `len` bytes (>= 12).
pub fn message(i: usize, j: usize, k: usize, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(i as u32).to_be_bytes());
    m.extend_from_slice(&(j as u32).to_be_bytes());
    m.extend_from_slice(&(k as u32).to_be_bytes());
    while m.len() < len {
        m.push((m.len() * 31 + k) as u8);
    }
    m
}

/// Every replica sends `count` messages to every other; checks that each
/// receives them all, in order, with the right contents.
pub fn exchange_all_pairs<R: RxPath, T: TxPath>(nodes: &mut [Node<R, T>], count: usize) {
    let n = nodes.len();
    let base: Vec<Vec<usize>> = (0..n)
        .map(|j| (0..n).map(|i| nodes[j].inbox.from(r(i)).len()).collect())
        .collect();
    for k in 0..count {
        for (i, node) in nodes.iter_mut().enumerate() {
            for j in (0..n).filter(|&j| j != i) {
                node.tx
                    .send(r(j), &message(i, j, k, 12 + (k * 37) % 3000))
                    .unwrap();
            }
        }
    }
    for j in 0..n {
        let want: Vec<usize> = (0..n)
            .map(|i| if i == j { 0 } else { base[j][i] + count })
            .collect();
        wait(nodes, j, "all messages", |inbox| {
            (0..n).all(|i| inbox.from(r(i)).len() >= want[i])
        });
        for i in (0..n).filter(|&i| i != j) {
            let got = nodes[j].inbox.from(r(i));
            assert_eq!(got.len(), want[i], "{i} -> {j}: no duplicates");
            for k in 0..count {
                assert_eq!(
                    got[base[j][i] + k],
                    &message(i, j, k, 12 + (k * 37) % 3000)[..],
                    "{i} -> {j} #{k}"
                );
            }
        }
    }
}
