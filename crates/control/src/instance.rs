//! One consensus instance: its history across regencies (what this replica
//! wrote and accepted — Cachin's `writeset` and `(valts, val)`), and its
//! votes in the current regency (the proposal, the WRITE and ACCEPT sets).

use std::sync::Arc;

use wire::sync::WRITTEN_MAX;
use wire::{Accept, Batch, Cid, DecisionProof, Digest, OpenVote, Regency};

/// Most distinct batches remembered per instance (the values it wrote).
const BATCHES_MAX: usize = WRITTEN_MAX + 1;

#[derive(Debug)]
pub(crate) struct Instance {
    pub cid: Cid,
    // --- history, kept across regencies ---
    /// The value last accepted, with its regency.
    pub accepted: Option<(Regency, Digest)>,
    /// Values written, with their regencies, oldest first (bounded).
    pub written: Vec<(Regency, Digest)>,
    /// Batches of the values written or fetched (bounded).
    pub batches: Vec<Arc<Batch>>,
    /// The decision proof, once a quorum of ACCEPTs matched a batch held.
    pub decided: Option<DecisionProof>,
    // --- votes of the current regency ---
    pub regency: Regency,
    /// The value being voted on in `regency` (from PROPOSE or SYNC).
    pub proposal: Option<Arc<Batch>>,
    /// The proposal is durable (acknowledged by the host).
    pub persisted: bool,
    /// This replica sent its WRITE in `regency` (only once the proposal is
    /// durable: a vote is on disk before it leaves, so a crash-restart
    /// cannot make an honest replica vote twice).
    pub write_sent: bool,
    /// WRITE digest received from each replica (index = replica id).
    pub writes: Vec<Option<Digest>>,
    /// ACCEPT received from each replica.
    pub accepts: Vec<Option<Accept>>,
    /// This replica sent its ACCEPT in `regency`.
    pub accept_sent: bool,
}

impl Instance {
    pub fn new(cid: Cid, regency: Regency, n: usize) -> Self {
        Self {
            cid,
            accepted: None,
            written: Vec::new(),
            batches: Vec::new(),
            decided: None,
            regency,
            proposal: None,
            persisted: false,
            write_sent: false,
            writes: vec![None; n],
            accepts: vec![None; n],
            accept_sent: false,
        }
    }

    /// Starts the votes of a new regency; the history stays.
    pub fn reset_votes(&mut self, regency: Regency) {
        assert!(regency > self.regency, "regencies only grow");
        self.regency = regency;
        self.proposal = None;
        self.persisted = false;
        self.write_sent = false;
        self.writes.iter_mut().for_each(|w| *w = None);
        self.accepts.iter_mut().for_each(|a| *a = None);
        self.accept_sent = false;
    }

    pub fn proposal_digest(&self) -> Option<Digest> {
        self.proposal.as_ref().map(|b| b.digest())
    }

    pub fn writes_for(&self, d: &Digest) -> usize {
        self.writes.iter().filter(|w| w.as_ref() == Some(d)).count()
    }

    pub fn accepts_for(&self, d: &Digest) -> usize {
        self.accepts
            .iter()
            .filter(|a| a.as_ref().is_some_and(|a| &a.digest == d))
            .count()
    }

    /// A digest with at least `q` ACCEPTs in the current regency.
    pub fn accept_quorum(&self, q: usize) -> Option<Digest> {
        self.accepts
            .iter()
            .flatten()
            .map(|a| a.digest)
            .find(|d| self.accepts_for(d) >= q)
    }

    /// The matching signed ACCEPTs of the current regency.
    pub fn proof_for(&self, d: &Digest) -> DecisionProof {
        DecisionProof {
            cid: self.cid,
            digest: *d,
            accepts: self
                .accepts
                .iter()
                .flatten()
                .filter(|a| &a.digest == d)
                .copied()
                .collect(),
        }
    }

    /// The batch with digest `d`, if held.
    pub fn batch(&self, d: &Digest) -> Option<&Arc<Batch>> {
        self.batches.iter().find(|b| &b.digest() == d)
    }

    /// Remembers a batch (bounded: the oldest not currently proposed goes).
    pub fn keep_batch(&mut self, b: Arc<Batch>) {
        if self.batch(&b.digest()).is_some() {
            return;
        }
        if self.batches.len() == BATCHES_MAX {
            let keep = self.proposal_digest();
            if let Some(i) = self.batches.iter().position(|x| Some(x.digest()) != keep) {
                self.batches.remove(i);
            }
        }
        self.batches.push(b);
        assert!(self.batches.len() <= BATCHES_MAX);
    }

    /// Records that this replica wrote `d` in the current regency.
    pub fn record_write(&mut self, d: Digest) {
        if self.written.last() == Some(&(self.regency, d)) {
            return;
        }
        if self.written.len() == WRITTEN_MAX {
            self.written.remove(0);
        }
        self.written.push((self.regency, d));
    }

    /// What a STOPDATA reports about this instance.
    pub fn open_vote(&self) -> OpenVote {
        OpenVote {
            cid: self.cid,
            accepted: self.accepted,
            written: self.written.clone(),
            decided: self.decided.clone(),
        }
    }
}
