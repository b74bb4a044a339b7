//! State transfer, the requesting side (BFT-SMaRt DSN'14 Sec. III-D).
//!
//! A replica that is behind asks every other replica for its state. Each
//! answers with its newest checkpoint (cid, digest, length) and the
//! decisions it holds from the requested cid on, each with its decision
//! proof — those are self-verifying, so one reply suffices to continue
//! the log. When the gap reaches below every reply's decisions, the replica
//! needs a checkpoint: it trusts the newest one that f+1 replicas report
//! with the same digest (at least one of them is correct), fetches it in
//! chunks from one of those replicas (the next one on a timeout or a digest
//! mismatch), and checks the digest before installing it.

use std::collections::BTreeMap;

use wire::{CheckpointInfo, Cid, Decided, ReplicaId, SnapshotChunk, StateReply};

/// A checkpoint being fetched.
#[derive(Debug)]
pub(crate) struct Assembly {
    pub info: CheckpointInfo,
    /// Replicas that reported this checkpoint, in the order tried.
    pub sources: Vec<ReplicaId>,
    pub source: usize,
    pub bytes: Vec<u8>,
}

impl Assembly {
    pub fn current_source(&self) -> ReplicaId {
        self.sources[self.source % self.sources.len()]
    }
    /// Switches to the next source and restarts (after a timeout or a bad
    /// digest).
    pub fn next_source(&mut self) {
        self.source += 1;
        self.bytes.clear();
    }
    /// Appends a chunk if it continues the assembly. Returns true when the
    /// checkpoint is complete.
    pub fn add(&mut self, c: &SnapshotChunk) -> bool {
        if c.cid == self.info.cid && c.total == self.info.len && c.offset == self.bytes.len() as u64
        {
            self.bytes.extend_from_slice(&c.bytes);
        }
        assert!(self.bytes.len() as u64 <= self.info.len);
        self.bytes.len() as u64 == self.info.len
    }
}

/// A state transfer in progress.
#[derive(Debug)]
pub(crate) struct Transfer {
    /// Catch up at least to this cid.
    pub target: Cid,
    pub last_request_tick: u64,
    /// The newest reply from each replica.
    pub replies: BTreeMap<ReplicaId, StateReply>,
    pub assembly: Option<Assembly>,
}

impl Transfer {
    pub fn new(target: Cid, tick: u64) -> Self {
        Self {
            target,
            last_request_tick: tick,
            replies: BTreeMap::new(),
            assembly: None,
        }
    }

    /// The decision for `cid` from any reply, if one holds it.
    pub fn decision(&self, cid: Cid) -> Option<&Decided> {
        self.replies.values().find_map(|r| {
            let first = r.decisions.first()?.proof.cid;
            let i = cid.checked_sub(first)? as usize;
            r.decisions.get(i)
        })
    }

    /// The newest checkpoint above `above` that at least `k` replies report
    /// with the same digest and length, and who reported it.
    pub fn trusted_checkpoint(
        &self,
        above: Cid,
        k: usize,
    ) -> Option<(CheckpointInfo, Vec<ReplicaId>)> {
        let mut groups: BTreeMap<(Cid, [u8; 32], u64), Vec<ReplicaId>> = BTreeMap::new();
        for r in self.replies.values() {
            if let Some(c) = r.checkpoint.filter(|c| c.cid > above) {
                groups
                    .entry((c.cid, c.digest.0, c.len))
                    .or_default()
                    .push(r.replica);
            }
        }
        groups
            .into_iter()
            .rev()
            .find(|(_, who)| who.len() >= k)
            .map(|((cid, digest, len), who)| {
                (
                    CheckpointInfo {
                        cid,
                        digest: wire::Digest(digest),
                        len,
                    },
                    who,
                )
            })
    }

    /// The `k`-th highest last-decided cid the replies report (at least
    /// one correct replica has it when `k` is f+1); 0 with fewer replies.
    pub fn kth_highest_reported(&self, k: usize) -> Cid {
        let mut v: Vec<Cid> = self.replies.values().map(|r| r.last_decided).collect();
        v.sort_unstable_by(|a, b| b.cmp(a));
        v.get(k.saturating_sub(1)).copied().unwrap_or(0)
    }
}
