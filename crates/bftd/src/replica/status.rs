//! Live status of one replica, shared by its threads: written by the
//! control loop and the executor, read by the API and the HTTP endpoints.

use std::sync::atomic::{AtomicU64, Ordering};

use wire::metrics::LatencyHistogram;

/// Gauges of a running replica (relaxed atomics; each has one writer).
#[derive(Debug, Default)]
pub struct Status {
    /// Current regency (BFT-SMaRt's epoch of leadership; etcd's raft_term).
    pub regency: AtomicU64,
    /// Replica id of the current leader.
    pub leader: AtomicU64,
    /// Highest consensus instance decided and delivered.
    pub last_decided_cid: AtomicU64,
    /// Highest consensus instance executed against the store.
    pub last_applied_cid: AtomicU64,
    /// Store revision after the last executed instance.
    pub revision: AtomicU64,
    /// Requests waiting to be ordered.
    pub pending_requests: AtomicU64,
    /// Consensus instances decided, and requests executed.
    pub decisions_total: AtomicU64,
    pub requests_executed_total: AtomicU64,
}

impl Status {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
    pub fn set(c: &AtomicU64, v: u64) {
        c.store(v, Ordering::Relaxed)
    }
}

/// Per-stage latency histograms of a replica (lock-free; see
/// [`wire::metrics::LatencyHistogram`]).
#[derive(Debug, Default)]
pub struct Histograms {
    /// One consensus instance at this replica: from the proposal (sent as
    /// leader, accepted as backup) to the decision — the KmMR paper's
    /// "consensus time".
    pub consensus_instance: LatencyHistogram,
    /// WRITE phase: proposal to this replica's ACCEPT (a quorum of WRITEs
    /// and the batch durable).
    pub write_phase: LatencyHistogram,
    /// ACCEPT phase: this replica's ACCEPT to the decision.
    pub accept_phase: LatencyHistogram,
    /// One group commit (write + fdatasync) of the storage thread.
    pub fsync: LatencyHistogram,
    /// Executing one decision against the store.
    pub execute: LatencyHistogram,
    /// One etcd API call, as its client sees it at this replica.
    pub api_request: LatencyHistogram,
}
