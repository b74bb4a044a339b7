//! The fake disk and the recovery seam: a write-ahead log with the
//! contract of `crates/storage`.
//!
//! Every write is a [`Record`] (PROPOSAL, DECISION, REGENCY, CHECKPOINT, as
//! `storage::Record`). Writes become durable in the order they were made
//! (group commit: a later write is never durable before an earlier one),
//! each after a seeded delay; a crash loses every write not yet durable.
//! - PROPOSAL: a batch the replica will vote for. Control sends its ACCEPT
//!   only after [`Disk::pop_due`] hands back the acknowledgement.
//! - DECISION: written when the host executes a decision (batch + proof).
//! - REGENCY: written when the core installs or adopts a regency.
//! - CHECKPOINT: the blob of a checkpoint the host took, or one state
//!   transfer installed. The newest two are kept, and the log reaches back
//!   to the older one (as `Storage::truncate_through`).
//!
//! [`Durable::recover`] is what a restarting replica reads: its newest
//! durable checkpoint and the consecutive durable decisions after it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use wire::{Batch, CheckpointInfo, Cid, DecisionProof, Digest, Regency};

use crate::rng::Prng;

/// Checkpoints kept on the durable disk (as `storage`).
pub const CHECKPOINTS_KEPT: usize = 2;

/// One write-ahead log entry.
#[derive(Debug, Clone)]
pub enum Record {
    /// A proposal the replica will vote for (durable before its ACCEPT).
    Proposal {
        /// Instance.
        cid: Cid,
        /// Regency of the proposal.
        regency: Regency,
        /// Digest of the batch (what the core's acknowledgement names).
        digest: Digest,
    },
    /// An executed decision.
    Decision {
        /// The decided batch.
        batch: Arc<Batch>,
        /// Its decision proof (names the cid).
        proof: DecisionProof,
    },
    /// A regency the replica entered.
    Regency(Regency),
    /// A checkpoint blob (`control::checkpoint` layout).
    Checkpoint {
        /// Its cid, digest and length.
        info: CheckpointInfo,
        /// The blob.
        blob: Arc<Vec<u8>>,
    },
}

/// What survives a crash: the durable part of the log.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    /// Highest regency durably entered.
    pub regency: Regency,
    /// Newest checkpoints, oldest first (at most [`CHECKPOINTS_KEPT`]).
    pub checkpoints: VecDeque<(CheckpointInfo, Arc<Vec<u8>>)>,
    /// Durable decisions by cid, from the older kept checkpoint on.
    pub decisions: BTreeMap<Cid, (Arc<Batch>, DecisionProof)>,
    /// Durable proposals (kept for the trace and counters only: the
    /// control core cannot take open instances back at restart).
    pub proposals: u64,
}

/// What a restart reads back.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// Regency to restart in.
    pub regency: Regency,
    /// The newest durable checkpoint.
    pub checkpoint: Option<(CheckpointInfo, Arc<Vec<u8>>)>,
    /// The durable decisions after it, consecutive, ascending.
    pub decisions: Vec<(Arc<Batch>, DecisionProof)>,
}

impl Durable {
    fn apply(&mut self, r: Record) {
        match r {
            Record::Proposal { .. } => self.proposals += 1,
            Record::Decision { batch, proof } => {
                self.decisions.insert(proof.cid, (batch, proof));
            }
            Record::Regency(g) => self.regency = self.regency.max(g),
            Record::Checkpoint { info, blob } => {
                if self
                    .checkpoints
                    .back()
                    .is_some_and(|(c, _)| c.cid >= info.cid)
                {
                    return;
                }
                self.checkpoints.push_back((info, blob));
                while self.checkpoints.len() > CHECKPOINTS_KEPT {
                    self.checkpoints.pop_front();
                }
                let floor = self.checkpoints.front().map_or(0, |(c, _)| c.cid);
                self.decisions = self.decisions.split_off(&(floor + 1));
            }
        }
    }

    /// The newest checkpoint and the consecutive decisions after it.
    pub fn recover(&self) -> Recovered {
        let checkpoint = self.checkpoints.back().cloned();
        let mut next = checkpoint.as_ref().map_or(0, |(c, _)| c.cid) + 1;
        let mut decisions = Vec::new();
        while let Some((b, p)) = self.decisions.get(&next) {
            decisions.push((b.clone(), p.clone()));
            next += 1;
        }
        Recovered {
            regency: self.regency,
            checkpoint,
            decisions,
        }
    }
}

/// One replica's disk: writes in flight and the durable log.
pub struct Disk {
    ack_delay_max_ticks: u64,
    rng: Prng,
    /// Writes in flight, in write order, with their (non-decreasing)
    /// durability ticks.
    pending: VecDeque<(u64, Record)>,
    /// The durable log.
    pub durable: Durable,
    /// Writes made durable.
    pub acked: u64,
    /// Writes lost in crashes.
    pub lost: u64,
}

impl Disk {
    /// An empty disk making writes durable within `ack_delay_max_ticks`.
    pub fn new(ack_delay_max_ticks: u64, rng: Prng) -> Self {
        Self {
            ack_delay_max_ticks,
            rng,
            pending: VecDeque::new(),
            durable: Durable::default(),
            acked: 0,
            lost: 0,
        }
    }

    /// Starts a write; durable after a delay, never before earlier writes.
    pub fn write(&mut self, now: u64, r: Record) {
        let after = self.pending.back().map_or(0, |(t, _)| *t);
        let due = (now + self.rng.range(0, self.ack_delay_max_ticks)).max(after);
        self.pending.push_back((due, r));
    }

    /// Makes the writes due at `now` durable; returns the next proposal
    /// among them to acknowledge to the core, in write order.
    pub fn pop_due(&mut self, now: u64) -> Option<(Cid, Digest)> {
        while self.pending.front().is_some_and(|(t, _)| *t <= now) {
            let (_, r) = self.pending.pop_front().expect("checked");
            self.acked += 1;
            let ack = match &r {
                Record::Proposal { cid, digest, .. } => Some((*cid, *digest)),
                _ => None,
            };
            self.durable.apply(r);
            if ack.is_some() {
                return ack;
            }
        }
        None
    }

    /// A crash: writes not yet durable are gone.
    pub fn crash(&mut self) {
        self.lost += self.pending.len() as u64;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(cid: Cid) -> DecisionProof {
        DecisionProof {
            cid,
            digest: Digest::ZERO,
            accepts: vec![],
        }
    }

    fn decision(cid: Cid) -> Record {
        Record::Decision {
            batch: Arc::new(Batch::new(vec![])),
            proof: proof(cid),
        }
    }

    #[test]
    fn writes_become_durable_in_order_and_a_crash_loses_the_rest() {
        let mut d = Disk::new(5, Prng::new(1));
        for cid in 1..=20 {
            d.write(cid, decision(cid));
        }
        d.pop_due(12);
        let durable: Vec<Cid> = d.durable.decisions.keys().copied().collect();
        // A prefix, whatever the delays.
        assert_eq!(durable, (1..=durable.len() as u64).collect::<Vec<_>>());
        d.crash();
        d.pop_due(1000);
        assert_eq!(d.durable.decisions.len(), durable.len());
        assert_eq!(d.acked + d.lost, 20);
    }

    #[test]
    fn recovery_starts_at_the_newest_checkpoint_and_stops_at_a_gap() {
        let mut d = Durable::default();
        for cid in 1..=9 {
            d.apply(decision(cid));
        }
        d.apply(decision(11));
        let info = |cid| CheckpointInfo {
            cid,
            digest: Digest::ZERO,
            len: 0,
        };
        d.apply(Record::Checkpoint {
            info: info(4),
            blob: Arc::new(vec![]),
        });
        let r = d.recover();
        assert_eq!(r.checkpoint.unwrap().0.cid, 4);
        let cids: Vec<Cid> = r.decisions.iter().map(|(_, p)| p.cid).collect();
        assert_eq!(cids, vec![5, 6, 7, 8, 9]);
        // Two newer checkpoints: the log is cut back to the older kept one.
        d.apply(Record::Checkpoint {
            info: info(6),
            blob: Arc::new(vec![]),
        });
        d.apply(Record::Checkpoint {
            info: info(8),
            blob: Arc::new(vec![]),
        });
        assert_eq!(d.checkpoints.len(), CHECKPOINTS_KEPT);
        assert_eq!(d.decisions.keys().next(), Some(&7));
        assert_eq!(d.recover().decisions.len(), 1);
    }
}
