//! The fault switch: which peers are blocked (simulated partitions).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use wire::ReplicaId;

use crate::sys::EventFd;

/// One flag per replica of the cluster; reads are a relaxed load.
struct BlockSet {
    blocked: Vec<AtomicBool>,
    /// Bumped by every change, so the receive side notices cheaply.
    generation: AtomicU64,
}

/// The fault switch of one transport, shared by its receive side, its send
/// side, its connector and the test harness (clone it freely).
///
/// While a peer is blocked: messages to it are refused before sealing
/// ([`crate::TxError::Blocked`]); frames from it are dropped on receipt; for
/// TCP, its inbound connection is closed and new ones are refused after the
/// HELLO. Every dropped message, frame or handshake counts in `fault_drops`.
#[derive(Clone)]
pub struct FaultSwitch {
    set: Arc<BlockSet>,
    /// Wakes the receive side so it closes links of newly blocked peers.
    wake: Option<Arc<EventFd>>,
}

impl FaultSwitch {
    /// A switch for replicas `0..n`, none blocked.
    pub(crate) fn new(n: usize, wake: Option<Arc<EventFd>>) -> Self {
        Self {
            set: Arc::new(BlockSet {
                blocked: (0..n).map(|_| AtomicBool::new(false)).collect(),
                generation: AtomicU64::new(0),
            }),
            wake,
        }
    }

    /// True if `peer` is blocked (false for ids outside the cluster).
    pub fn is_blocked(&self, peer: ReplicaId) -> bool {
        self.set
            .blocked
            .get(peer.index())
            .is_some_and(|b| b.load(Ordering::Relaxed))
    }

    /// Replaces the set of blocked peers with `peers` (ids outside the
    /// cluster are ignored).
    pub fn set_blocked(&self, peers: &[ReplicaId]) {
        for (i, flag) in self.set.blocked.iter().enumerate() {
            flag.store(peers.iter().any(|p| p.index() == i), Ordering::Relaxed);
        }
        self.set.generation.fetch_add(1, Ordering::Release);
        if let Some(w) = &self.wake {
            w.notify();
        }
    }

    /// Changes so far; differs from an earlier value after any change.
    pub(crate) fn generation(&self) -> u64 {
        self.set.generation.load(Ordering::Acquire)
    }
}
