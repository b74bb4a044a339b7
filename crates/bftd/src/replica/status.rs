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
    /// This replica's own clients' requests sent for ordering and not yet
    /// answered (the proxy sends them again until they are executed, so a
    /// write whose client gave up may still take effect later, as in etcd).
    pub proxy_outstanding: AtomicU64,
    /// Consensus instances decided, and requests executed.
    pub decisions_total: AtomicU64,
    pub requests_executed_total: AtomicU64,
    /// 1 while a state transfer runs.
    pub transferring: AtomicU64,
    /// Wall clock (ms since the epoch) of the control thread's last round
    /// or tick: a wedged control thread stops moving it.
    pub control_heartbeat_ms: AtomicU64,
    /// Wall clock (ms since the epoch) when `last_decided_cid` last moved
    /// (or the replica started).
    pub last_progress_ms: AtomicU64,
    /// How long without a decision, while requests wait or a state
    /// transfer runs, counts as stuck, ms.
    pub stall_after_ms: AtomicU64,
    /// A leader move asked by the API (Maintenance.MoveLeader): the
    /// transferee's replica id + 1, 0 for none. Written by the API, taken
    /// (swapped to 0) by the control loop at its next tick.
    pub move_leader_to: AtomicU64,
    /// Fault injection (`/debug/stall_control`): the control loop sleeps
    /// until this wall clock, ms since the epoch (0: never).
    pub stall_control_until_ms: AtomicU64,
}

/// Milliseconds since the epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Status {
    /// How long before `now_ms` the control thread last beat, ms (0 when
    /// the clock went back).
    pub fn control_silent_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(Self::get(&self.control_heartbeat_ms))
    }

    /// Why this replica is not healthy, if it is not: its control thread
    /// has not run for 5 s, or it delivered nothing for `stall_after_ms`
    /// while requests wait or a state transfer runs (a replica stuck
    /// behind, or a cluster without a working regency).
    pub fn health(&self, now_ms: u64) -> Result<(), String> {
        let silent = self.control_silent_ms(now_ms);
        if silent > 5_000 {
            return Err(format!("control thread silent for {silent} ms"));
        }
        let idle = now_ms.saturating_sub(Self::get(&self.last_progress_ms));
        let pending = Self::get(&self.pending_requests);
        let transferring = Self::get(&self.transferring) == 1;
        if idle > Self::get(&self.stall_after_ms) && (pending > 0 || transferring) {
            return Err(format!(
                "stuck: no decision for {idle} ms at cid {} with {pending} requests pending{}",
                Self::get(&self.last_decided_cid),
                if transferring {
                    " and a state transfer running"
                } else {
                    ""
                }
            ));
        }
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_without_decisions_while_requests_wait_is_reported_stuck() {
        let s = Status::default();
        Status::set(&s.stall_after_ms, 3_000);
        Status::set(&s.control_heartbeat_ms, 10_000);
        Status::set(&s.last_progress_ms, 10_000);
        assert_eq!(s.health(10_500), Ok(()));
        // Idle and nothing waits: healthy however long.
        Status::set(&s.control_heartbeat_ms, 20_000);
        assert_eq!(s.health(20_000), Ok(()));
        // Requests wait and nothing was decided for 10 s: stuck.
        Status::set(&s.pending_requests, 5);
        let err = s.health(20_000).unwrap_err();
        assert!(err.contains("stuck") && err.contains("5 requests"), "{err}");
        // A state transfer that makes no progress: stuck too.
        Status::set(&s.pending_requests, 0);
        Status::set(&s.transferring, 1);
        assert!(s.health(20_000).unwrap_err().contains("state transfer"));
        // A silent control thread.
        Status::set(&s.transferring, 0);
        assert!(s.health(26_000).unwrap_err().contains("control thread"));
    }
}
