//! The fake disk: a write-ahead log with the contract of `crates/storage`,
//! holding the real `storage::Record`s.
//!
//! The host hands it the same [`DiskJob`]s the bftd storage thread gets,
//! turned into records by the same `node::LogWriter`. Writes become durable
//! in the order they were made (group commit: a later write is never
//! durable before an earlier one), each after a seeded delay; a crash
//! loses every write not yet durable. Proposals and regencies are
//! acknowledged to the core ([`Ack`]) once durable.
//!
//! Checkpoints: the newest two are kept, and the log reaches back to the
//! older one (as `Storage::truncate_through`); with one checkpoint the log
//! is kept whole (a corrupt single checkpoint still has the log to fall
//! back on). [`Durable::recover`] gives
//! what `Storage::open` gives a restarting bftd — a `storage::Recovered` —
//! and the host restarts through `node::restore`, the production path.

use std::collections::VecDeque;
use std::sync::Arc;

use node::{Ack, DiskJob, LogWriter};
use storage::Record;
use wire::{Cid, Regency};

use crate::rng::Prng;

/// Checkpoints kept on the durable disk (as `storage`).
pub const CHECKPOINTS_KEPT: usize = 2;

/// One write in flight.
#[derive(Debug, Clone)]
enum Write {
    /// Log records, and the acknowledgement owed once they are durable.
    Records(Vec<Record>, Option<Ack>),
    /// A checkpoint file.
    Checkpoint { cid: Cid, blob: Arc<Vec<u8>> },
}

/// What survives a crash: the durable part of the log.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    /// Highest regency durably entered.
    pub regency: Regency,
    /// Newest checkpoints (cid, blob), oldest first (at most
    /// [`CHECKPOINTS_KEPT`]).
    pub checkpoints: VecDeque<(Cid, Arc<Vec<u8>>)>,
    /// The log from the older kept checkpoint on, in write order.
    pub records: Vec<Record>,
    /// Durable proposals (for the counters).
    pub proposals: u64,
}

impl Durable {
    fn apply(&mut self, w: Write) {
        match w {
            Write::Records(records, _) => {
                for r in records {
                    match &r {
                        Record::Proposal { .. } => self.proposals += 1,
                        Record::Regency { regency } => self.regency = self.regency.max(*regency),
                        _ => {}
                    }
                    self.records.push(r);
                }
            }
            Write::Checkpoint { cid, blob } => {
                if self.checkpoints.back().is_some_and(|(c, _)| *c >= cid) {
                    return;
                }
                self.checkpoints.push_back((cid, blob));
                while self.checkpoints.len() > CHECKPOINTS_KEPT {
                    self.checkpoints.pop_front();
                }
                let floor = self.floor();
                self.records.retain(|r| r.cid().is_none_or(|c| c > floor));
            }
        }
    }

    /// What `Storage::open` would hand a restarting replica: the newest
    /// checkpoint, the records above it (every REGENCY record), and the
    /// proposals and decisions it covers still in the log.
    pub fn recover(&self) -> storage::Recovered {
        let checkpoint = self
            .checkpoints
            .back()
            .map(|(cid, blob)| storage::Checkpoint {
                cid: *cid,
                digest: wire::hash::digest(blob),
                snapshot: blob.to_vec(),
            });
        let floor = checkpoint.as_ref().map_or(0, |c| c.cid);
        let covered = match checkpoint {
            Some(_) => self
                .records
                .iter()
                .filter(|r| {
                    matches!(r, Record::Proposal { .. } | Record::Decision { .. })
                        && r.cid().is_some_and(|c| c <= floor)
                })
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        storage::Recovered {
            checkpoint,
            records: self
                .records
                .iter()
                .filter(|r| r.cid().is_none_or(|c| c > floor))
                .cloned()
                .collect(),
            covered,
            regency: self.regency,
            truncated_tail_bytes: 0,
            warnings: Vec::new(),
        }
    }

    /// The floor of the log: the older of two kept checkpoints' cid, 0
    /// with fewer (`Storage::truncate_through` truncates nothing until it
    /// keeps two). Sim seed 452747: with the single checkpoint as the
    /// floor, a replica that alone decided the checkpoint's cid lost that
    /// decision at a restart, served nothing the others could use, and the
    /// cluster stayed behind it (a restart bftd does not have).
    fn floor(&self) -> Cid {
        if self.checkpoints.len() < CHECKPOINTS_KEPT {
            return 0;
        }
        self.checkpoints.front().map_or(0, |(c, _)| *c)
    }
}

/// One replica's disk: writes in flight and the durable log.
pub struct Disk {
    ack_delay_max_ticks: u64,
    rng: Prng,
    /// Writes in flight, in write order, with their (non-decreasing)
    /// durability ticks.
    pending: VecDeque<(u64, Write)>,
    writer: LogWriter,
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
            writer: LogWriter::new(0),
            durable: Durable::default(),
            acked: 0,
            lost: 0,
        }
    }

    /// Starts a write; durable after a delay, never before earlier writes.
    pub fn write(&mut self, now: u64, job: DiskJob) {
        let ack = job.ack();
        let w = match &job {
            DiskJob::Checkpoint { cid, blob } | DiskJob::Installed { cid, blob } => {
                Write::Checkpoint {
                    cid: *cid,
                    blob: blob.clone(),
                }
            }
            _ => Write::Records(self.writer.records(&job), ack),
        };
        let after = self.pending.back().map_or(0, |(t, _)| *t);
        let due = (now + self.rng.range(0, self.ack_delay_max_ticks)).max(after);
        self.pending.push_back((due, w));
    }

    /// Makes the writes due at `now` durable; returns the acknowledgements
    /// among them, in write order.
    pub fn pop_due(&mut self, now: u64) -> Vec<Ack> {
        let mut acks = Vec::new();
        while self.pending.front().is_some_and(|(t, _)| *t <= now) {
            let (_, w) = self.pending.pop_front().expect("checked");
            self.acked += 1;
            if let Write::Records(_, Some(a)) = &w {
                acks.push(*a);
            }
            let truncates = matches!(w, Write::Checkpoint { .. });
            self.durable.apply(w);
            if truncates {
                self.writer.truncated(self.durable.floor());
            }
        }
        acks
    }

    /// A crash: writes not yet durable are gone; the writer's memory of
    /// what is logged restarts from nothing (as a restarted process's).
    pub fn crash(&mut self) {
        self.lost += self.pending.len() as u64;
        self.pending.clear();
        self.writer = LogWriter::new(self.durable.regency);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wire::{Batch, DecisionProof};

    fn decision(cid: Cid) -> DiskJob {
        let batch = Arc::new(Batch::new(vec![]));
        DiskJob::Decision {
            proof: DecisionProof {
                cid,
                digest: batch.digest(),
                accepts: vec![],
            },
            batch,
        }
    }

    fn decided(d: &Durable) -> Vec<Cid> {
        d.records
            .iter()
            .filter_map(|r| match r {
                Record::Decision { cid, .. } => Some(*cid),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn writes_become_durable_in_order_and_a_crash_loses_the_rest() {
        let mut d = Disk::new(5, Prng::new(1));
        for cid in 1..=20 {
            d.write(cid, decision(cid));
        }
        d.pop_due(12);
        let durable = decided(&d.durable);
        // A prefix, whatever the delays.
        assert_eq!(durable, (1..=durable.len() as u64).collect::<Vec<_>>());
        d.crash();
        d.pop_due(1000);
        assert_eq!(decided(&d.durable), durable);
        assert_eq!(d.acked + d.lost, 20);
    }

    #[test]
    fn proposals_and_regencies_are_acknowledged_once_durable() {
        let mut d = Disk::new(0, Prng::new(1));
        let batch = Arc::new(Batch::new(vec![]));
        d.write(
            0,
            DiskJob::Proposal {
                cid: 1,
                regency: 0,
                batch: batch.clone(),
            },
        );
        d.write(0, DiskJob::Regency(1));
        d.write(0, decision(1));
        assert_eq!(
            d.pop_due(0),
            vec![Ack::Proposal(1, batch.digest()), Ack::Regency(1)]
        );
        assert_eq!(d.durable.regency, 1);
    }

    #[test]
    fn recovery_starts_at_the_newest_checkpoint() {
        let mut d = Disk::new(0, Prng::new(1));
        for cid in 1..=9 {
            d.write(0, decision(cid));
        }
        let ck = |cid| DiskJob::Checkpoint {
            cid,
            blob: Arc::new(vec![cid as u8]),
        };
        d.write(0, ck(4));
        d.pop_due(0);
        let r = d.durable.recover();
        assert_eq!(r.checkpoint.unwrap().cid, 4);
        let cids: Vec<Cid> = r
            .records
            .iter()
            .filter_map(|r| r.cid())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(cids, vec![5, 6, 7, 8, 9]);
        // Two newer checkpoints: the log is cut back to the older kept one.
        d.write(0, ck(6));
        d.write(0, ck(8));
        d.pop_due(0);
        assert_eq!(d.durable.checkpoints.len(), CHECKPOINTS_KEPT);
        assert_eq!(decided(&d.durable), vec![7, 8, 9]);
        assert_eq!(
            d.durable
                .recover()
                .records
                .iter()
                .filter(|r| matches!(r, Record::Decision { .. }))
                .count(),
            1
        );
    }
}
