//! In-memory transport: the real handshake and real sealed frames over
//! bounded channels, behind the same [`RxPath`]/[`TxPath`] as TCP, so the
//! dataplane's code path is the same. For tests: it allocates one vector
//! per frame.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Select, Sender, TrySendError};
use wire::link::{self, OpenKey, SealKey, FRAME_OVERHEAD};
use wire::{Keyring, ReplicaId, SecretKey};

use crate::fault::FaultSwitch;
use crate::stats::NicStats;
use crate::{RxEvent, RxPath, TxError, TxPath};

/// Configuration of a [`MemNetwork`].
#[derive(Clone, Debug)]
pub struct MemConfig {
    /// Identity key of each replica, index = replica id.
    pub identities: Vec<SecretKey>,
    /// Public keys; `keyring.replica(i)` must be `identities[i].public()`.
    pub keyring: Arc<Keyring>,
    /// Largest encoded message, bytes.
    pub message_bytes_max: usize,
    /// Capacity of each (receiver, sender) queue, events. A sender finding
    /// it full drops the message before sealing (`TxError::QueueFull`).
    pub rx_queue_frames_max: usize,
}

impl MemConfig {
    /// `n` replicas with deterministic keys (seed `[i + 1; 32]`), cluster id
    /// `0x6d656d`, 1 MiB messages, 1024-event queues.
    pub fn new(n: usize) -> Self {
        assert!(
            (1..=u8::MAX as usize).contains(&n),
            "MemConfig::new takes 1..=255 replicas"
        );
        let identities: Vec<SecretKey> = (0..n)
            .map(|i| SecretKey::from_seed([i as u8 + 1; 32]))
            .collect();
        let keyring = Keyring::new(
            0x6d656d,
            identities.iter().map(SecretKey::public).collect(),
            HashMap::new(),
        );
        Self {
            identities,
            keyring: Arc::new(keyring),
            message_bytes_max: 1 << 20,
            rx_queue_frames_max: 1024,
        }
    }
}

/// One replica's ends of a [`MemNetwork`].
pub struct MemNode {
    pub rx: MemRx,
    pub tx: MemTx,
}

/// Builds connected in-memory transports.
pub struct MemNetwork;

impl MemNetwork {
    /// `n` nodes with [`MemConfig::new`]`(n)`; index = replica id.
    #[allow(clippy::new_ret_no_self)] // a network is its nodes
    pub fn new(n: usize) -> Vec<MemNode> {
        Self::with_config(MemConfig::new(n))
    }

    /// One node per identity, every ordered pair linked by a real
    /// handshake; each receiver's queues start with a `LinkUp` per peer.
    /// Panics if the keys do not match the keyring (a test bug).
    pub fn with_config(config: MemConfig) -> Vec<MemNode> {
        let n = config.identities.len();
        assert_eq!(n, config.keyring.n(), "one identity per replica");
        assert!(config.message_bytes_max > 0 && config.rx_queue_frames_max > 0);
        let stats: Vec<Arc<NicStats>> = (0..n).map(|_| Arc::new(NicStats::new(n))).collect();
        let faults: Vec<FaultSwitch> = (0..n).map(|_| FaultSwitch::new(n, None)).collect();
        // queues[j][i]: frames from i to j.
        let mut senders: Vec<Vec<Option<Sender<MemEvent>>>> = Vec::with_capacity(n);
        let mut receivers: Vec<Vec<Option<Receiver<MemEvent>>>> = Vec::with_capacity(n);
        for j in 0..n {
            let (s, r): (Vec<_>, Vec<_>) = (0..n)
                .map(|i| {
                    if i == j {
                        (None, None)
                    } else {
                        let (s, r) = bounded(config.rx_queue_frames_max);
                        (Some(s), Some(r))
                    }
                })
                .unzip();
            senders.push(s);
            receivers.push(r);
        }
        let cluster = config.keyring.cluster_id();
        let mut epoch = 0u64;
        let mut links: Vec<Vec<Option<MemLink>>> = (0..n).map(|_| Vec::new()).collect();
        for (i, out) in links.iter_mut().enumerate() {
            let from = ReplicaId(i as u16);
            for j in 0..n {
                if i == j {
                    out.push(None);
                    continue;
                }
                let to = ReplicaId(j as u16);
                let (hello, dialing) = link::dial(&config.identities[i], cluster, from, to);
                let (reply, peer, challenged) = link::accept(
                    &config.identities[j],
                    &config.keyring,
                    to,
                    &hello,
                    config.message_bytes_max,
                )
                .expect("in-memory handshake: keys must match the keyring");
                assert_eq!(peer, from);
                let (seal, confirm) = dialing
                    .finish(&config.keyring, &reply)
                    .expect("in-memory handshake: keys must match the keyring");
                let open = challenged
                    .confirm(&confirm)
                    .expect("in-memory handshake: both sides derive one key");
                epoch += 1;
                let queue = senders[j][i].clone().expect("queue from another replica");
                queue
                    .try_send(MemEvent::Up {
                        epoch,
                        open: Box::new(open),
                    })
                    .expect("fresh queue has room");
                out.push(Some(MemLink {
                    seal,
                    queue,
                    epoch,
                    peer_stats: stats[j].clone(),
                    peer_faults: faults[j].clone(),
                }));
            }
        }
        links
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(i, (links, receivers))| {
                let me = ReplicaId(i as u16);
                MemNode {
                    rx: MemRx {
                        me,
                        peers: receivers
                            .into_iter()
                            .enumerate()
                            .filter_map(|(p, r)| r.map(|r| (ReplicaId(p as u16), r)))
                            .collect(),
                        cursor: 0,
                        wake: crossbeam_channel::bounded(1),
                        stats: stats[i].clone(),
                        faults: faults[i].clone(),
                    },
                    tx: MemTx {
                        me,
                        n,
                        message_bytes_max: config.message_bytes_max,
                        links,
                        stats: stats[i].clone(),
                        faults: faults[i].clone(),
                    },
                }
            })
            .collect()
    }
}

enum MemEvent {
    Up { epoch: u64, open: Box<OpenKey> },
    Frame { epoch: u64, frame: Vec<u8> },
}

/// One sending direction of an in-memory link.
struct MemLink {
    seal: SealKey,
    /// The receiver's queue for frames from us; we are its only producer.
    queue: Sender<MemEvent>,
    epoch: u64,
    peer_stats: Arc<NicStats>,
    peer_faults: FaultSwitch,
}

/// The receiving side of a [`MemNode`]: serves the per-peer queues
/// round-robin with a per-peer budget.
pub struct MemRx {
    me: ReplicaId,
    peers: Vec<(ReplicaId, Receiver<MemEvent>)>,
    /// Wakes a blocked poll (see [`crate::RxWaker`]).
    wake: (crossbeam_channel::Sender<()>, Receiver<()>),
    /// Index into `peers` of the queue served first by the next poll.
    cursor: usize,
    stats: Arc<NicStats>,
    faults: FaultSwitch,
}

impl MemRx {
    /// One round-robin pass without waiting.
    fn take<F: FnMut(RxEvent<'_>)>(
        &mut self,
        max_events: usize,
        per_peer_budget: usize,
        handler: &mut F,
    ) -> usize {
        let m = self.peers.len();
        let mut taken = 0;
        let mut served_last = None;
        for k in 0..m {
            let i = (self.cursor + k) % m;
            let (peer, queue) = &self.peers[i];
            let mut from_peer = 0;
            while from_peer < per_peer_budget && taken < max_events {
                let Ok(event) = queue.try_recv() else { break };
                match event {
                    MemEvent::Up { epoch, open } => handler(RxEvent::LinkUp {
                        peer: *peer,
                        epoch,
                        open,
                    }),
                    MemEvent::Frame { epoch, mut frame } => handler(RxEvent::Frame {
                        peer: *peer,
                        epoch,
                        frame: &mut frame,
                    }),
                }
                from_peer += 1;
                taken += 1;
            }
            if from_peer > 0 {
                served_last = Some(i);
            }
            if taken == max_events {
                break;
            }
        }
        if let Some(i) = served_last {
            self.cursor = (i + 1) % m;
        }
        taken
    }
}

impl RxPath for MemRx {
    fn me(&self) -> ReplicaId {
        self.me
    }

    fn waker(&self) -> crate::RxWaker {
        crate::RxWaker::chan(self.wake.0.clone())
    }

    fn poll<F: FnMut(RxEvent<'_>)>(
        &mut self,
        max_events: usize,
        per_peer_budget: usize,
        timeout: Duration,
        handler: &mut F,
    ) -> usize {
        assert!(max_events > 0, "poll with max_events = 0");
        assert!(per_peer_budget > 0, "poll with per_peer_budget = 0");
        if self.peers.is_empty() {
            return 0;
        }
        let taken = self.take(max_events, per_peer_budget, handler);
        if taken > 0 || timeout.is_zero() {
            return taken;
        }
        // Every queue was empty: wait for one to become ready, then one
        // more pass.
        let mut select = Select::new();
        for (_, rx) in &self.peers {
            select.recv(rx);
        }
        select.recv(&self.wake.1);
        if select.ready_timeout(timeout).is_err() {
            return 0;
        }
        while self.wake.1.try_recv().is_ok() {}
        self.take(max_events, per_peer_budget, handler)
    }

    /// In memory a frame is never corrupted in transit and a link is never
    /// redialed: the reset is only counted (`bad_frame_resets`), for a
    /// peer of the cluster.
    fn reset_link(&mut self, peer: ReplicaId, _epoch: u64) -> bool {
        if peer == self.me || peer.index() >= self.stats.peers.len() {
            return false;
        }
        self.stats
            .peer(peer)
            .bad_frame_resets
            .fetch_add(1, Ordering::Relaxed);
        true
    }

    fn stats(&self) -> &Arc<NicStats> {
        &self.stats
    }

    fn faults(&self) -> &FaultSwitch {
        &self.faults
    }
}

/// The sending side of a [`MemNode`]: `send` seals and delivers at once;
/// `flush` has nothing to do.
pub struct MemTx {
    me: ReplicaId,
    n: usize,
    message_bytes_max: usize,
    links: Vec<Option<MemLink>>,
    stats: Arc<NicStats>,
    faults: FaultSwitch,
}

impl TxPath for MemTx {
    fn me(&self) -> ReplicaId {
        self.me
    }

    fn n(&self) -> usize {
        self.n
    }

    fn send(&mut self, peer: ReplicaId, message: &[u8]) -> Result<(), TxError> {
        if peer == self.me {
            return Err(TxError::ToSelf);
        }
        let link = self
            .links
            .get_mut(peer.index())
            .and_then(Option::as_mut)
            .ok_or(TxError::UnknownPeer(peer))?;
        if message.len() > self.message_bytes_max {
            return Err(TxError::TooLarge {
                len: message.len(),
                max: self.message_bytes_max,
            });
        }
        let counters = self.stats.peer(peer);
        if self.faults.is_blocked(peer) || link.peer_faults.is_blocked(self.me) {
            counters.fault_drops.fetch_add(1, Ordering::Relaxed);
            return Err(TxError::Blocked(peer));
        }
        // Only we produce into this queue, so room now is room after
        // sealing: a sealed frame is never dropped.
        if link.queue.is_full() {
            counters.tx_drops.fetch_add(1, Ordering::Relaxed);
            return Err(TxError::QueueFull(peer));
        }
        let mut frame = Vec::with_capacity(message.len() + FRAME_OVERHEAD);
        link.seal.seal(message, &mut frame);
        let len = frame.len() as u64;
        let event = MemEvent::Frame {
            epoch: link.epoch,
            frame,
        };
        match link.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Disconnected(_)) => return Err(TxError::Closed),
            Err(TrySendError::Full(_)) => unreachable!("checked for room; sole producer"),
        }
        counters.tx_frames.fetch_add(1, Ordering::Relaxed);
        counters.tx_bytes.fetch_add(len, Ordering::Relaxed);
        let rx = link.peer_stats.peer(self.me);
        rx.rx_frames.fetch_add(1, Ordering::Relaxed);
        rx.rx_bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    fn flush(&mut self) {}

    fn stats(&self) -> &Arc<NicStats> {
        &self.stats
    }

    fn faults(&self) -> &FaultSwitch {
        &self.faults
    }
}
