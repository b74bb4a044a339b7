//! What the host writes to its log, and what the log acknowledges.
//!
//! The contract (`crates/storage`; Mod-SMaRt needs the first two for
//! safety across crashes):
//! - a PROPOSAL is durable before the replica WRITEs or ACCEPTs it
//!   ([`Ack::Proposal`] goes back to `Replica::on_persisted`);
//! - an ACCEPT record is durable before the replica sends its ACCEPT
//!   ([`Ack::Accept`] goes to `Replica::on_accept_persisted`), so a
//!   restarted replica reports exactly the ACCEPTs it sent;
//! - a REGENCY record is durable before the replica sends its STOPDATA
//!   ([`Ack::Regency`] goes to `Replica::on_regency_persisted`), so a crash
//!   never brings it back in a regency it promised to leave;
//! - DECISIONs are logged in cid order after the batch they name (a batch
//!   decided without this replica's vote is logged as a proposal first);
//!   nothing waits for them;
//! - checkpoints installed by state transfer are recorded before any later
//!   decision.

use std::collections::HashSet;
use std::sync::Arc;

use storage::Record;
use wire::{Batch, Cid, DecisionProof, Digest, Regency};

/// One write the core's outputs ask of the disk.
#[derive(Debug, Clone)]
pub enum DiskJob {
    /// A proposal to make durable and acknowledge ([`Ack::Proposal`]).
    Proposal {
        cid: Cid,
        regency: Regency,
        batch: Arc<Batch>,
    },
    /// An accept to make durable and acknowledge ([`Ack::Accept`]).
    Accept {
        regency: Regency,
        cid: Cid,
        digest: Digest,
    },
    /// A decision to log (nothing waits for it).
    Decision {
        batch: Arc<Batch>,
        proof: DecisionProof,
    },
    /// A regency installed, to make durable and acknowledge
    /// ([`Ack::Regency`]).
    Regency(Regency),
    /// A periodic checkpoint blob (written in the background, best effort).
    Checkpoint { cid: Cid, blob: Arc<Vec<u8>> },
    /// A checkpoint installed by state transfer (the log jumps to it).
    Installed { cid: Cid, blob: Arc<Vec<u8>> },
}

impl DiskJob {
    /// What the disk acknowledges to the core once this job is durable.
    pub fn ack(&self) -> Option<Ack> {
        match self {
            DiskJob::Proposal { cid, batch, .. } => Some(Ack::Proposal(*cid, batch.digest())),
            DiskJob::Regency(r) => Some(Ack::Regency(*r)),
            DiskJob::Accept {
                regency,
                cid,
                digest,
            } => Some(Ack::Accept(*regency, *cid, *digest)),
            _ => None,
        }
    }
}

/// A durable write the core waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// The proposal of `cid` with this batch digest is durable.
    Proposal(Cid, Digest),
    /// The REGENCY record of this regency is durable.
    Regency(Regency),
    /// The accept of (regency, cid, digest) is durable.
    Accept(Regency, Cid, Digest),
}

impl Ack {
    /// Hands the acknowledgement to the core.
    pub fn apply(self, core: &mut control::Replica, out: &mut Vec<control::Output>) {
        match self {
            Ack::Proposal(cid, digest) => core.on_persisted(cid, digest, out),
            Ack::Regency(r) => core.on_regency_persisted(r, out),
            Ack::Accept(r, cid, d) => core.on_accept_persisted(r, cid, d, out),
        }
    }
}

/// Turns [`DiskJob`]s into log records. Remembers which proposals are in
/// the log (since the last truncation) so a decision names a logged batch.
#[derive(Debug, Default)]
pub struct LogWriter {
    logged: HashSet<(Cid, Digest)>,
    regency: Regency,
}

impl LogWriter {
    /// A writer for a log whose newest REGENCY record is `regency`.
    pub fn new(regency: Regency) -> Self {
        Self {
            logged: HashSet::new(),
            regency,
        }
    }

    /// The records of one job, in order (none for checkpoint jobs, which
    /// the store writes as files: see [`LogWriter::truncated`]).
    pub fn records(&mut self, job: &DiskJob) -> Vec<Record> {
        match job {
            DiskJob::Proposal {
                cid,
                regency,
                batch,
            } => {
                self.logged.insert((*cid, batch.digest()));
                vec![Record::Proposal {
                    regency: *regency,
                    cid: *cid,
                    batch: batch.to_bytes(),
                }]
            }
            DiskJob::Decision { batch, proof } => {
                let regency = proof.accepts.first().map_or(0, |a| a.regency);
                let mut v = Vec::with_capacity(2);
                if self.logged.insert((proof.cid, proof.digest)) {
                    v.push(Record::Proposal {
                        regency,
                        cid: proof.cid,
                        batch: batch.to_bytes(),
                    });
                }
                v.push(Record::Decision {
                    cid: proof.cid,
                    regency,
                    digest: proof.digest,
                    proof: proof.to_bytes(),
                });
                v
            }
            DiskJob::Accept {
                regency,
                cid,
                digest,
            } => vec![Record::Accept {
                regency: *regency,
                cid: *cid,
                digest: *digest,
            }],
            DiskJob::Regency(r) => {
                if *r > self.regency {
                    self.regency = *r;
                    vec![Record::Regency { regency: *r }]
                } else {
                    Vec::new() // durable already: acknowledged all the same
                }
            }
            DiskJob::Checkpoint { .. } | DiskJob::Installed { .. } => Vec::new(),
        }
    }

    /// The log was truncated through the older kept checkpoint `floor`.
    pub fn truncated(&mut self, floor: Cid) {
        self.logged.retain(|(c, _)| *c > floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decided_batch_never_voted_for_is_logged_as_a_proposal_first() {
        let batch = Arc::new(Batch::new(vec![]));
        let proof = DecisionProof {
            cid: 3,
            digest: batch.digest(),
            accepts: vec![],
        };
        let mut w = LogWriter::new(0);
        let recs = w.records(&DiskJob::Decision {
            batch: batch.clone(),
            proof: proof.clone(),
        });
        assert!(matches!(
            recs.as_slice(),
            [
                Record::Proposal { cid: 3, .. },
                Record::Decision { cid: 3, .. }
            ]
        ));
        // Voted for first: the decision alone.
        let mut w = LogWriter::new(0);
        w.records(&DiskJob::Proposal {
            cid: 3,
            regency: 0,
            batch: batch.clone(),
        });
        let recs = w.records(&DiskJob::Decision { batch, proof });
        assert!(matches!(recs.as_slice(), [Record::Decision { cid: 3, .. }]));
    }

    #[test]
    fn a_regency_is_logged_once_and_acknowledged_always() {
        let mut w = LogWriter::new(2);
        assert!(w.records(&DiskJob::Regency(2)).is_empty());
        assert_eq!(DiskJob::Regency(2).ack(), Some(Ack::Regency(2)));
        assert_eq!(w.records(&DiskJob::Regency(3)).len(), 1);
    }
}
