//! Parameters of the consensus core. Every replica of a cluster must use the
//! same values for the protocol constants (n, batch limits); the others are
//! local.

use thiserror::Error;
use wire::ReplicaId;

/// Configuration of one replica's consensus core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Number of replicas, n >= 4. Tolerates f = floor((n-1)/3) faults.
    pub n: usize,
    /// This replica.
    pub me: ReplicaId,
    /// Most requests the leader puts in one batch.
    pub batch_requests_max: usize,
    /// Most bytes (encoded) of one batch.
    pub batch_bytes_max: usize,
    /// Most consensus instances the leader keeps in flight (proposed, not
    /// yet decided). 1 is BFT-SMaRt's behaviour.
    pub pipeline_depth: usize,
    /// With an instance already in flight, the leader proposes another only
    /// once this many requests wait (otherwise they wait for the previous
    /// decision and go in one batch, as in BFT-SMaRt): pipelining is for
    /// heavy load, batching for the rest.
    pub pipeline_batch_min: usize,
    /// How far past the last decided cid this replica accepts messages for
    /// instances, in cids. Must be >= `pipeline_depth`; a replica that falls
    /// further behind catches up by state transfer.
    pub instance_window: usize,
    /// Most requests waiting to be ordered; more are refused at entry.
    pub pending_requests_max: usize,
    /// Most requests of one client (one replica's proxy, or one BFT
    /// client) waiting to be ordered, so that no origin can fill the pool
    /// and starve the others. At most [`crate::clients::WINDOW`]: a client
    /// further ahead than its de-duplication window loses requests anyway.
    pub pending_per_client_max: usize,
    /// Ticks a request may wait to be ordered before it is forwarded to the
    /// leader; after as many again, the replica asks for a leader change
    /// (BFT-SMaRt's request timeout).
    pub request_timeout_ticks: u64,
    /// Ticks a replica waits in a new regency for its SYNC before it asks
    /// for the next regency; doubles with each consecutive failed regency.
    pub sync_timeout_ticks: u64,
    /// Length of one throughput observation window, ticks (Aardvark-style
    /// leader monitoring). A regency's first window starts when its SYNC is
    /// applied; the window doubles with each consecutive regency that
    /// executed nothing (up to 64 times) and is back to this after one
    /// that executed something.
    pub throughput_window_ticks: u64,
    /// A leader that delivers less than this percentage of the best window
    /// throughput of its regency and recent ones, while demand is there
    /// (requests wait half a window, or their mean wait doubled), is
    /// replaced (`Replica::monitor_throughput`). 0 turns the check off.
    pub throughput_min_pct: u64,
    /// Most requests carried in one STOP or forwarded per tick.
    pub stop_requests_max: usize,
    /// Ticks the link to the leader may stay down (after having been up)
    /// before this replica asks for a leader change: a crashed leader's
    /// connections reset at once, so this is the fast path of failover.
    /// 0 turns it off (request timeouts still apply).
    pub leader_link_timeout_ticks: u64,
    /// A backup counts the leader's ACCEPT of an instance as late when it
    /// arrives this many ticks or more after the instance was decided here
    /// by the other replicas' ACCEPTs (or never): the leader receives and
    /// processes the quorum's WRITEs slower than its peers, as a leader
    /// whose receive path is flooded does. When most instances of a
    /// throughput window (at least 8) are late, the backup asks for a leader
    /// change (`Replica::monitor_leader_lag`; RBFT's per-replica
    /// monitoring). 0 turns the check off.
    pub leader_lag_max_ticks: u64,
    /// A checkpoint is taken after every `checkpoint_period` decisions.
    pub checkpoint_period: u64,
    /// Most bytes of batches in one STATE_REPLY (below the message limit).
    pub state_reply_bytes_max: usize,
    /// Chunk size of checkpoint transfer, bytes: a protocol constant (the
    /// checkpoint digest is a hash over the chunks' digests, so every
    /// replica must use the same value). At most
    /// `wire::transfer::CHUNK_BYTES_MAX`.
    pub snapshot_chunk_bytes: usize,
}

/// Why a configuration was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("n = {0}: BFT needs n = 3f+1 >= 4 replicas")]
    TooFewReplicas(usize),
    #[error("replica id {me} is not below n = {n}")]
    BadReplicaId { me: u16, n: usize },
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    #[error("instance_window ({window}) must be >= pipeline_depth ({depth})")]
    WindowBelowPipeline { window: usize, depth: usize },
    #[error(
        "pending_requests_max ({pool}) must be >= n x pending_per_client_max ({n} x {per_client}) \
         so that every replica's proxy always has room"
    )]
    PoolBelowOrigins {
        pool: usize,
        n: usize,
        per_client: usize,
    },
    #[error("{name} = {value} is above its maximum {max}")]
    TooLarge {
        name: &'static str,
        value: usize,
        max: usize,
    },
}

impl Config {
    /// Defaults for `n` replicas, as replica `me`.
    pub fn new(n: usize, me: ReplicaId) -> Self {
        Self {
            n,
            me,
            batch_requests_max: 512,
            batch_bytes_max: 4 * 1024 * 1024,
            pipeline_depth: 4,
            pipeline_batch_min: 16,
            instance_window: 64,
            pending_requests_max: 16 * 1024,
            pending_per_client_max: crate::clients::WINDOW as usize,
            request_timeout_ticks: 200,
            sync_timeout_ticks: 200,
            throughput_window_ticks: 100,
            throughput_min_pct: 50,
            stop_requests_max: 64,
            leader_link_timeout_ticks: 5,
            leader_lag_max_ticks: 0,
            checkpoint_period: 256,
            state_reply_bytes_max: 2 * 1024 * 1024,
            snapshot_chunk_bytes: wire::transfer::CHUNK_BYTES_MAX,
        }
    }

    /// Checks the invariants the core relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.n < 4 {
            return Err(ConfigError::TooFewReplicas(self.n));
        }
        if self.me.index() >= self.n {
            return Err(ConfigError::BadReplicaId {
                me: self.me.0,
                n: self.n,
            });
        }
        for (v, name) in [
            (self.batch_requests_max, "batch_requests_max"),
            (self.batch_bytes_max, "batch_bytes_max"),
            (self.pipeline_depth, "pipeline_depth"),
            (self.pending_requests_max, "pending_requests_max"),
            (self.request_timeout_ticks as usize, "request_timeout_ticks"),
            (self.sync_timeout_ticks as usize, "sync_timeout_ticks"),
            (
                self.throughput_window_ticks as usize,
                "throughput_window_ticks",
            ),
            (self.stop_requests_max, "stop_requests_max"),
            (self.checkpoint_period as usize, "checkpoint_period"),
            (self.state_reply_bytes_max, "state_reply_bytes_max"),
            (self.pending_per_client_max, "pending_per_client_max"),
            (self.snapshot_chunk_bytes, "snapshot_chunk_bytes"),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (value, max, name) in [
            (
                self.pending_per_client_max,
                crate::clients::WINDOW as usize,
                "pending_per_client_max",
            ),
            (
                self.snapshot_chunk_bytes,
                wire::transfer::CHUNK_BYTES_MAX,
                "snapshot_chunk_bytes",
            ),
        ] {
            if value > max {
                return Err(ConfigError::TooLarge { name, value, max });
            }
        }
        if self.instance_window < self.pipeline_depth {
            return Err(ConfigError::WindowBelowPipeline {
                window: self.instance_window,
                depth: self.pipeline_depth,
            });
        }
        if self.pending_requests_max < self.n.saturating_mul(self.pending_per_client_max) {
            return Err(ConfigError::PoolBelowOrigins {
                pool: self.pending_requests_max,
                n: self.n,
                per_client: self.pending_per_client_max,
            });
        }
        Ok(())
    }

    /// Most decisions kept in memory for state transfer: those since the
    /// last checkpoint, with room for the checkpoint to be taken.
    pub fn decision_log_max(&self) -> usize {
        2 * self.checkpoint_period as usize + self.instance_window
    }

    /// Most entries of one STOPDATA's `open` list (instances above the last
    /// decided one, within the window) and of its `recent` proofs: the
    /// bound the sender keeps and `wire::Limits::instances_max` must allow.
    pub fn stopdata_entries_max(&self) -> usize {
        self.instance_window + 1
    }

    /// Most decisions one STATE_REPLY carries: the bound the sender keeps
    /// and `wire::Limits::state_reply_decisions_max` must allow (derived
    /// here, in one place, so the two cannot disagree).
    pub fn state_reply_decisions_max(&self) -> usize {
        4 * self.instance_window.max(16)
    }

    /// The decoding limits this config needs at least, on top of `base`.
    pub fn wire_limits(&self, base: wire::Limits) -> wire::Limits {
        wire::Limits {
            instances_max: base.instances_max.max(self.stopdata_entries_max()),
            state_reply_decisions_max: self.state_reply_decisions_max(),
            ..base
        }
    }

    /// f = floor((n-1)/3), the number of Byzantine replicas tolerated.
    pub fn f(&self) -> usize {
        (self.n - 1) / 3
    }

    /// Byzantine quorum, ceil((n+f+1)/2): 2f+1 when n = 3f+1. Any two
    /// quorums intersect in at least one correct replica.
    pub fn quorum(&self) -> usize {
        (self.n + self.f() + 1).div_ceil(2)
    }

    /// Leader of `regency`: replica `regency mod n` (BFT-SMaRt).
    pub fn leader_of(&self, regency: wire::Regency) -> ReplicaId {
        ReplicaId((regency as usize % self.n) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_for_cluster_sizes() {
        for (n, f, q) in [
            (4, 1, 3),
            (5, 1, 4),
            (6, 1, 4),
            (7, 2, 5),
            (10, 3, 7),
            (13, 4, 9),
        ] {
            let c = Config::new(n, ReplicaId(0));
            assert_eq!((c.f(), c.quorum()), (f, q), "n = {n}");
            // Two quorums intersect in more than f replicas.
            assert!(2 * c.quorum() - n > c.f(), "n = {n}");
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        assert_eq!(
            Config::new(3, ReplicaId(0)).validate(),
            Err(ConfigError::TooFewReplicas(3))
        );
        assert!(matches!(
            Config::new(4, ReplicaId(4)).validate(),
            Err(ConfigError::BadReplicaId { .. })
        ));
        let mut c = Config::new(4, ReplicaId(0));
        c.instance_window = 1;
        assert!(c.validate().is_err());
    }
}
