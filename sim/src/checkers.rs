//! Safety checkers that run while the simulation runs: agreement (the same
//! batch for each cid at every correct replica, delivered 1, 2, 3, ...,
//! skipping only the cids a checkpoint installed by state transfer covers),
//! decision proofs, equal state digests at equal cids (after a delivery, a
//! checkpoint installation or a restart), and regencies. The history
//! checks are in [`crate::linearizability`]; liveness is judged by
//! [`crate::World::run`].

use std::collections::BTreeMap;
use std::sync::Arc;

use control::Decision;
use wire::crypto::verify_decision_proof;
use wire::{Cid, Digest, Keyring, Regency, ReplicaId};

/// Which property a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// Two correct replicas decided different batches (or different fresh
    /// requests) for one cid.
    Agreement,
    /// A correct replica delivered out of cid order.
    Order,
    /// A decision's proof is not a quorum of valid matching ACCEPTs.
    Proof,
    /// Correct replicas have different kv state after the same cid
    /// (delivered, installed by state transfer, or recovered at restart).
    StateDigest,
    /// A correct replica's regency went backwards, or a regency's leader
    /// is not `regency mod n`.
    Regency,
    /// Correct replicas at the same cid disagree on executed requests.
    ClientTable,
    /// A key's client history is not linearizable.
    Linearizability,
    /// etcd revisions out of order across keys.
    Revisions,
    /// A client operation failed in the store.
    KvError,
    /// A forged request (bad signature) was executed.
    Forgery,
    /// A lease expired on the votes of fewer than f+1 replicas (only
    /// Byzantine ones voted).
    Lease,
    /// After the faults healed, an operation did not complete or a correct
    /// replica did not catch up in time.
    Liveness,
}

/// One broken property, with what is needed to understand it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The property broken.
    pub check: Check,
    /// When it was detected.
    pub tick: u64,
    /// Who, which cid or key, and what differed.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:?} @t{}] {}", self.check, self.tick, self.detail)
    }
}

/// What the first correct replica to deliver a cid delivered.
#[derive(Debug, Clone)]
struct Record {
    by: ReplicaId,
    digest: Digest,
    fresh: Vec<u32>,
}

/// Checks every delivery of every correct replica as it happens.
pub struct Checker {
    keyring: Arc<Keyring>,
    correct: Vec<bool>,
    decided: BTreeMap<Cid, Record>,
    /// The first kv state digest seen after each cid, and who had it.
    states: BTreeMap<Cid, (ReplicaId, Digest)>,
    /// Last cid delivered (or jumped to) per replica.
    last: Vec<Cid>,
    /// Highest regency entered per replica.
    regency: Vec<Regency>,
    /// Checkpoint digests taken per cid by correct replicas.
    checkpoints: BTreeMap<Cid, Vec<Digest>>,
    /// Everything found so far.
    pub violations: Vec<Violation>,
}

impl Checker {
    /// `correct[i]`: replica i is correct (its deliveries are checked).
    pub fn new(keyring: Arc<Keyring>, correct: Vec<bool>) -> Self {
        let n = keyring.n();
        assert_eq!(correct.len(), n);
        Self {
            keyring,
            correct,
            decided: BTreeMap::new(),
            states: BTreeMap::new(),
            last: vec![0; n],
            regency: vec![0; n],
            checkpoints: BTreeMap::new(),
            violations: Vec::new(),
        }
    }

    fn violation(&mut self, check: Check, tick: u64, detail: String) {
        self.violations.push(Violation {
            check,
            tick,
            detail,
        });
    }

    /// Highest cid delivered by any correct replica.
    pub fn max_decided(&self) -> Cid {
        self.decided.keys().next_back().copied().unwrap_or(0)
    }

    /// Highest regency a correct replica entered.
    pub fn max_regency(&self) -> Regency {
        (0..self.regency.len())
            .filter(|&i| self.correct[i])
            .map(|i| self.regency[i])
            .max()
            .unwrap_or(0)
    }

    /// Replica `r` delivered `d`; `state` is its kv state digest after
    /// executing it.
    pub fn on_deliver(&mut self, tick: u64, r: ReplicaId, d: &Decision, state: Digest) {
        if !self.correct[r.index()] {
            return;
        }
        let expected = self.last[r.index()] + 1;
        if d.cid != expected {
            self.violation(
                Check::Order,
                tick,
                format!("{r:?} delivered cid {} after cid {}", d.cid, expected - 1),
            );
        }
        self.last[r.index()] = d.cid;
        let digest = d.batch.digest();
        match self.decided.get(&d.cid).cloned() {
            None => {
                self.check_proof(tick, r, d);
                self.decided.insert(
                    d.cid,
                    Record {
                        by: r,
                        digest,
                        fresh: d.fresh.clone(),
                    },
                );
            }
            Some(first) if first.digest != digest => self.violation(
                Check::Agreement,
                tick,
                format!(
                    "cid {}: {:?} decided {:?} but {r:?} decided {digest:?}",
                    d.cid, first.by, first.digest
                ),
            ),
            Some(first) if first.fresh != d.fresh => self.violation(
                Check::ClientTable,
                tick,
                format!(
                    "cid {}: {:?} executes requests {:?} of the batch, {r:?} executes {:?}",
                    d.cid, first.by, first.fresh, d.fresh
                ),
            ),
            Some(_) => {}
        }
        self.check_state(tick, r, d.cid, state, "after delivering");
    }

    /// Replica `r` installed a checkpoint of `cid` by state transfer: it
    /// skips the cids up to `cid` (no Deliver for them), and its kv state
    /// (`state`) must be the others' after `cid`.
    pub fn on_install(&mut self, tick: u64, r: ReplicaId, cid: Cid, state: Digest) {
        if !self.correct[r.index()] {
            return;
        }
        if cid <= self.last[r.index()] {
            self.violation(
                Check::Order,
                tick,
                format!(
                    "{r:?} installed a checkpoint of cid {cid} at cid {}",
                    self.last[r.index()]
                ),
            );
        }
        self.last[r.index()] = cid;
        self.check_state(tick, r, cid, state, "after installing a checkpoint of");
    }

    /// Replica `r` restarted from its durable log at `cid` with kv state
    /// `state` (re-executed from its newest durable checkpoint), in its
    /// durable `regency` (a regency not yet durable at the crash is lost).
    pub fn on_restart(
        &mut self,
        tick: u64,
        r: ReplicaId,
        cid: Cid,
        state: Digest,
        regency: Regency,
    ) {
        if !self.correct[r.index()] {
            return;
        }
        self.regency[r.index()] = regency;
        assert!(
            cid <= self.last[r.index()],
            "{r:?} recovered cid {cid} it never delivered"
        );
        self.last[r.index()] = cid;
        self.check_state(tick, r, cid, state, "after recovering");
    }

    /// Replica `r` took a checkpoint of `cid` with this blob digest (for
    /// [`Checker::checkpoint_splits`]).
    pub fn on_checkpoint(&mut self, r: ReplicaId, cid: Cid, digest: Digest) {
        if self.correct[r.index()] {
            self.checkpoints.entry(cid).or_default().push(digest);
        }
    }

    /// Checkpoint cids at which correct replicas produced different blob
    /// digests (state transfer trusts a checkpoint only when f+1 replicas
    /// report the same digest).
    pub fn checkpoint_splits(&self) -> usize {
        self.checkpoints
            .values()
            .filter(|ds| ds.iter().any(|d| *d != ds[0]))
            .count()
    }

    /// Replica `r` entered `regency` with `leader`: regencies only grow and
    /// the leader of regency g is replica g mod n.
    pub fn on_regency(&mut self, tick: u64, r: ReplicaId, regency: Regency, leader: ReplicaId) {
        if !self.correct[r.index()] {
            return;
        }
        let n = self.correct.len();
        if regency <= self.regency[r.index()] && regency != 0 {
            self.violation(
                Check::Regency,
                tick,
                format!(
                    "{r:?} entered regency {regency} after regency {}",
                    self.regency[r.index()]
                ),
            );
        }
        if leader.index() != regency as usize % n {
            self.violation(
                Check::Regency,
                tick,
                format!("{r:?}: regency {regency} led by {leader:?}"),
            );
        }
        self.regency[r.index()] = self.regency[r.index()].max(regency);
    }

    fn check_state(&mut self, tick: u64, r: ReplicaId, cid: Cid, state: Digest, how: &str) {
        match self.states.get(&cid).copied() {
            None => {
                self.states.insert(cid, (r, state));
            }
            Some((by, first)) if first != state => self.violation(
                Check::StateDigest,
                tick,
                format!("{how} cid {cid}: {by:?} has state {first:?}, {r:?} has {state:?}"),
            ),
            Some(_) => {}
        }
    }

    /// A decision proof: a Byzantine quorum of ACCEPTs from distinct
    /// replicas, for this cid, regency and digest, validly signed.
    fn check_proof(&mut self, tick: u64, r: ReplicaId, d: &Decision) {
        let p = &d.proof;
        let problem = if p.cid != d.cid {
            Some(format!("the proof is for cid {}", p.cid))
        } else if p.digest != d.batch.digest() {
            Some(format!("the proof is for digest {:?}", p.digest))
        } else if p.accepts.first().is_some_and(|a| a.regency != d.regency) {
            Some(format!(
                "decided in regency {} by a proof of regency {}",
                d.regency, p.accepts[0].regency
            ))
        } else {
            verify_decision_proof(&self.keyring, p)
                .err()
                .map(|e| format!("{e} ({} ACCEPTs)", p.accepts.len()))
        };
        if let Some(problem) = problem {
            self.violation(
                Check::Proof,
                tick,
                format!("cid {} at {r:?}: bad decision proof: {problem}", d.cid),
            );
        }
    }
}
